"""Simulator -> agent -> the test's own Mosquitto -> cloud -> DB, through real faults.

The broker is down for 30 s mid-run, the agent is SIGKILLed once and the cloud once. At the
end every reading the agent committed to its buffer is in the cloud's store exactly once, and
the stored values match the simulator's ground truth.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections import defaultdict
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from edge_agent.buffer import SqliteBuffer
from edge_agent.buffer_schema import META_LAST_SEQ
from protocols import topics
from tests.e2e.harness import Stack, wait_until
from tests.services import Mosquitto

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]
UNITS = {"grid": 1, "heatpump": 2, "waterheater": 3, "pv": 126, "grid_sunspec": 240}


def committed_last_seq(buffer_path: Path) -> int:
    """The last seq the (dead) agent committed, read without opening it as the agent would."""
    with sqlite3.connect(f"file:{buffer_path}?mode=ro", uri=True) as db:
        row = db.execute("SELECT value FROM meta WHERE key = ?", (META_LAST_SEQ,)).fetchone()
    return int(row[0]) if row else 0


class StatusWatch:
    """Follows the gateway's retained status so the test can wait for an empty buffer."""

    def __init__(self, broker_port: int, gateway: str) -> None:
        self.latest: dict[str, object] = {}
        self.changed = threading.Condition()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="e2e-status-watch")
        self.client.on_connect = lambda c, *_: c.subscribe(topics.status(gateway), qos=1)
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", broker_port)
        self.client.loop_start()

    def _on_message(self, _c: object, _u: object, msg: mqtt.MQTTMessage) -> None:
        with self.changed:
            self.latest = json.loads(msg.payload)
            self.changed.notify_all()

    def wait_drained(self, timeout_s: float) -> None:
        def drained() -> bool:
            return self.latest.get("state") == "online" and self.latest.get("buffer_depth") == 0

        with self.changed:
            assert self.changed.wait_for(drained, timeout_s), f"buffer not drained: {self.latest}"

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def drain_only_config(stack: Stack) -> Path:
    """The same gateway and buffer with no meters: it only sends what is left."""
    config = stack.workdir / "agent.toml"
    text = config.read_text().split("[[buses]]")[0]
    path = stack.workdir / "drain-only.toml"
    path.write_text(text)
    return path


def assert_values_match_truth(stack: Stack, paused_at_ms: int, truth: dict[str, dict]) -> None:
    latest: dict[tuple[str, str], float | None] = {}
    for _seq, meter, channel, value, ts, quality in stack.rows():
        if ts > paused_at_ms and quality == "good":
            latest[(meter, channel)] = value
    checked = 0
    for meter, unit in UNITS.items():
        for channel, expected in truth[str(unit)].items():
            if expected is None:
                continue
            got = latest.get((meter, channel))
            assert got is not None, f"no good reading of {meter}.{channel} after the pause"
            assert got == pytest.approx(expected, rel=0.005, abs=0.05), (meter, channel)
            checked += 1
    assert checked > 50
    print(f"{checked} channels match the simulator's ground truth within 0.5 %")


def assert_counters_monotonic(rows: list[tuple[int, str, str, float | None, int, str]]) -> None:
    last: dict[tuple[str, str], float] = {}
    for _seq, meter, channel, value, _ts, quality in rows:
        if channel.startswith("energy") and quality == "good" and value is not None:
            assert value >= last.get((meter, channel), 0.0) - 1e-6, (meter, channel, value)
            last[(meter, channel)] = value


def test_every_reading_arrives_once_through_broker_outage_and_kills(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    stack = Stack(tmp_path, mosquitto.url)
    watch: StatusWatch | None = None
    try:
        stack.start()
        stack.wait_stored_grows(timeout_s=60)

        mosquitto.kill()  # broker gone for 30 s: the agent buffers, the cloud waits
        time.sleep(30)
        mosquitto.start()
        stack.wait_stored_grows(timeout_s=60)

        stack.agent.sigkill()
        buffer_path = stack.agent_dir / "buffer.sqlite"
        last_before_kill = committed_last_seq(buffer_path)
        stack.agent.start()
        stack.wait_stored_grows(timeout_s=60)

        stack.cloud.sigkill()
        stack.cloud.start()
        stack.wait_stored_grows(timeout_s=60)

        stack.control.post("/pause").raise_for_status()
        truth = stack.control.get("/truth").json()
        paused_at = int(truth["ts_ms"])
        # Two poll rounds after the pause so every meter has a reading of the frozen state.
        wait_until(lambda: sum(1 for r in stack.rows() if r[4] > paused_at + 600) > 100, 30,
                   "readings taken after the pause")
        assert stack.agent.terminate() == 0

        # Whatever the agent still held is sent by a meterless agent on the same buffer.
        watch = StatusWatch(mosquitto.port, stack.gateway)
        stack.agent.cmd[-1] = str(drain_only_config(stack))
        stack.agent.start()
        watch.wait_drained(timeout_s=60)
        assert stack.agent.terminate() == 0

        buffer = SqliteBuffer(buffer_path)
        buffer.open()
        stats = buffer.stats()
        buffer.close()
        assert stats.depth == 0
        assert stats.dropped_total == 0

        rows = stack.rows()
        seqs = [row[0] for row in rows]
        assert len(seqs) == len(set(seqs)), "a seq stored twice"
        by_reading = defaultdict(int)
        for _seq, meter, channel, _value, ts, _quality in rows:
            by_reading[(meter, channel, ts)] += 1
        assert max(by_reading.values()) == 1, "one reading stored under two seqs"
        # Before the SIGKILL: every committed seq 1..N. After it the buffer continues above its
        # floor (a gap by design), then every seq up to the last one it ever assigned.
        before = [s for s in seqs if s <= last_before_kill]
        after = [s for s in seqs if s > last_before_kill]
        assert before == list(range(1, last_before_kill + 1)), "lost before the agent kill"
        assert after == list(range(after[0], stats.last_seq + 1)), "lost after the agent kill"
        print(f"ledger: {len(rows)} stored, seqs 1..{last_before_kill} and {after[0]}.."
              f"{stats.last_seq}, 0 lost, 0 duplicated")
        assert_counters_monotonic(rows)
        assert_values_match_truth(stack, paused_at, truth["units"])
    finally:
        if watch is not None:
            watch.close()
        stack.stop()
