"""SIGKILL a buffer writer mid-batch, again and again: the file opens cleanly, every reading the
writer reported as committed is still there or counted as dropped by the budget policy, and no
seq is ever handed out twice."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

import pytest

from edge_agent.buffer import SqliteBuffer

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
KILLS = 20
BATCH = 500
BUDGET = 1_000_000

# Appends batches forever; prints "first last" of each batch only after its commit returned.
WRITER = """
import os, sys
from pathlib import Path
from edge_agent.buffer import SqliteBuffer
from protocols.models import Reading, Unit

buf = SqliteBuffer(Path(sys.argv[1]), max_bytes=int(sys.argv[2]), thin_to_minutes=1,
                   seq_reservation=2000)
buf.open()
os.write(1, b"open\\n")
n = int(sys.argv[3])
ts = 1_764_000_000_000 + int(sys.argv[4]) * 10**8
while True:
    readings = [Reading(meter_id="m1", channel=f"c{k % 8}", value=float(k), unit=Unit.WATT,
                        ts=ts + k * 1000) for k in range(n)]
    ts += n * 1000
    seqs = buf.append_seqs(readings)
    os.write(1, f"{seqs[0]} {seqs[-1]}\\n".encode())
"""


def read_line(stream: IO[str], deadline: float) -> str:
    """One line from the writer; the deadline guards against a writer that hangs."""
    if time.monotonic() > deadline:
        raise AssertionError("writer did not report in time")
    line = stream.readline()
    if not line:
        raise AssertionError("writer exited before being killed")
    return line.strip()


def run_and_kill(path: Path, run: int, rng: random.Random) -> list[tuple[int, int]]:
    """Start a writer, wait for a few committed batches, SIGKILL it; its committed ranges."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(BUDGET), str(BATCH),
                             str(run)], stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    deadline = time.monotonic() + 20
    committed: list[tuple[int, int]] = []
    try:
        assert read_line(proc.stdout, deadline) == "open"
        for _ in range(rng.randint(2, 10)):
            first, last = read_line(proc.stdout, deadline).split()
            committed.append((int(first), int(last)))
        time.sleep(rng.uniform(0, 0.004))  # land the kill anywhere inside the next batch
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    for line in proc.stdout.read().splitlines():  # committed before the kill, not yet read
        if line.strip():
            first, last = line.split()
            committed.append((int(first), int(last)))
    proc.stdout.close()
    return committed


def stored_seqs(path: Path) -> list[int]:
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA quick_check").fetchall() == [("ok",)]
        return [row[0] for row in conn.execute("SELECT seq FROM readings ORDER BY seq")]
    finally:
        conn.close()


@pytest.mark.timeout(60)
def test_sigkill_mid_batch_never_corrupts_never_reuses_a_seq_and_counts_drops(
        tmp_path: Path) -> None:
    path = tmp_path / "buffer.sqlite"
    rng = random.Random(20261128)
    reported: set[int] = set()
    for run in range(KILLS):
        ranges = run_and_kill(path, run, rng)
        new = [seq for first, last in ranges for seq in range(first, last + 1)]
        assert len(new) == len(set(new))
        assert not reported.intersection(new), f"run {run} reused a seq"
        assert min(new) > max(reported, default=0), f"run {run} went backwards"
        reported.update(new)

        buf = SqliteBuffer(path, max_bytes=BUDGET)
        report = buf.open()
        assert report.recovered_corrupt_file is None, report.message
        stats = buf.stats()
        buf.close()
        present = stored_seqs(path)
        missing = reported.difference(present)
        # Every committed reading is still stored, or was removed by the (counted) policy.
        assert len(missing) <= stats.dropped_total
        assert stats.depth == len(present)
        # At most one batch per kill committed without being reported.
        committed_max = len(reported) + (run + 1) * BATCH
        assert len(reported) <= stats.depth + stats.dropped_total <= committed_max
        assert stats.last_seq >= max(present)

    assert stats.dropped_total > 0, "the budget policy never ran; the test proved less"
    assert not list(tmp_path.glob("*.corrupt-*"))
