"""Benchmark of the edge telemetry buffer against raw sqlite3 in the same run.

``python -m bench.bench_buffer [n]`` prints readings/s for:

- ``append_seqs`` (returns a ``range`` of seqs) and ``append`` (returns ``Reading`` copies) in
  batches of 100 and 1,000 readings, one transaction each;
- raw ``sqlite3.executemany`` of the same compact rows into the same table with the same
  pragmas (``raw_*``), and of the names stored as text on every row (``raw_text_*``);
- ratios buffer/raw (target >= 0.5 for ``append_seqs``);
- ``pending()`` paging 1,000 at a time and ``confirm()`` of 1,000-seq ranges;
- ``policy_*``: the one append that ran the full-disk policy on a 16 MiB buffer (readings
  stored before it, readings it removed, its duration in seconds).

Every figure is the median of three runs on fresh files.
"""

from __future__ import annotations

import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from edge_agent.buffer import SqliteBuffer
from edge_agent.buffer_schema import DDL
from protocols.models import Reading, SeqRange, Unit

_REPEATS = 3
_TS0 = 1_764_000_000_000


def make_readings(n: int) -> list[Reading]:
    """Three meters x 20 channels, a reading a second each, like a busy gateway."""
    return [Reading(meter_id=f"meter-{i % 3}", channel=f"ch_{i % 20}", value=float(i),
                    unit=Unit.WATT, ts=_TS0 + (i // 60) * 1000) for i in range(n)]


def _median_rate(n: int, once: Callable[[Path], float]) -> float:
    rates = []
    for _ in range(_REPEATS):
        with tempfile.TemporaryDirectory() as tmp:
            rates.append(n / once(Path(tmp) / "b.sqlite"))
    return statistics.median(rates)


def _buffer_append(readings: list[Reading], batch: int, *, copies: bool) -> Callable[[Path], float]:
    def once(path: Path) -> float:
        buf = SqliteBuffer(path, max_bytes=1 << 40)
        buf.open()
        append = buf.append if copies else buf.append_seqs
        start = time.perf_counter()
        for k in range(0, len(readings), batch):
            append(readings[k:k + batch])
        elapsed = time.perf_counter() - start
        buf.close()
        return elapsed
    return once


def _raw_append(rows: Sequence[tuple[object, ...]], ddl: tuple[str, ...], insert: str,
                batch: int) -> Callable[[Path], float]:
    def once(path: Path) -> float:
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        for statement in ddl:
            conn.execute(statement)
        start = time.perf_counter()
        for k in range(0, len(rows), batch):
            conn.execute("BEGIN")
            conn.executemany(insert, rows[k:k + batch])
            conn.execute("COMMIT")
        elapsed = time.perf_counter() - start
        conn.close()
        return elapsed
    return once


def _drain(readings: list[Reading], *, read: bool) -> Callable[[Path], float]:
    """Time pending() paging (read=True) or confirm() of 1,000-seq ranges (read=False)."""
    def once(path: Path) -> float:
        buf = SqliteBuffer(path, max_bytes=1 << 40)
        buf.open()
        for k in range(0, len(readings), 1000):
            buf.append_seqs(readings[k:k + 1000])
        start = time.perf_counter()
        if read:
            page = buf.pending(0, 1000)
            while page:
                last = page[-1].seq
                assert last is not None
                page = buf.pending(last, 1000)
        else:
            for first in range(1, len(readings) + 1, 1000):
                buf.confirm([SeqRange(first=first, last=first + 999)])
        elapsed = time.perf_counter() - start
        buf.close()
        return elapsed
    return once


def policy_action(max_bytes: int = 16 * 1024 * 1024) -> dict[str, float]:
    """Fill a buffer of ``max_bytes`` until the budget policy runs; time that one append."""
    per_round = 60_000  # 60 streams x 1,000 s of one reading a second
    with tempfile.TemporaryDirectory() as tmp:
        buf = SqliteBuffer(Path(tmp) / "b.sqlite", max_bytes=max_bytes)
        buf.open()
        base = make_readings(per_round)
        for round_no in range(10_000):
            shift = round_no * 1_000_000
            chunk = [r.model_copy(update={"ts": r.ts + shift}) for r in base]
            for k in range(0, per_round, 1000):
                start = time.perf_counter()
                buf.append_seqs(chunk[k:k + 1000])
                elapsed = time.perf_counter() - start
                stats = buf.stats()
                if stats.dropped_total:
                    buf.close()
                    return {"policy_depth_before": float(stats.depth + stats.dropped_total),
                            "policy_removed": float(stats.dropped_total),
                            "policy_append_s": elapsed}
        buf.close()
    raise RuntimeError("the policy never ran")


def run(n: int = 200_000) -> dict[str, float]:
    """All figures in readings per second, plus the buffer/raw ratios."""
    readings = make_readings(n)
    streams = {key: i + 1 for i, key in
               enumerate(dict.fromkeys((r.meter_id, r.channel) for r in readings))}
    compact = [(i + 1, streams[(r.meter_id, r.channel)], r.ts, r.value, 0)
               for i, r in enumerate(readings)]
    text = [(i + 1, r.meter_id, r.channel, r.value, r.unit.value, r.ts, r.quality.value)
            for i, r in enumerate(readings)]
    text_ddl = ("CREATE TABLE readings (seq INTEGER PRIMARY KEY, meter_id TEXT NOT NULL, "
                "channel TEXT NOT NULL, value REAL, unit TEXT NOT NULL, ts INTEGER NOT NULL, "
                "quality TEXT NOT NULL)",)
    results: dict[str, float] = {}
    for batch in (100, 1000):
        results[f"raw_{batch}"] = _median_rate(n, _raw_append(
            compact, DDL, "INSERT INTO readings VALUES (?, ?, ?, ?, ?)", batch))
        results[f"raw_text_{batch}"] = _median_rate(n, _raw_append(
            text, text_ddl, "INSERT INTO readings VALUES (?, ?, ?, ?, ?, ?, ?)", batch))
        results[f"append_seqs_{batch}"] = _median_rate(
            n, _buffer_append(readings, batch, copies=False))
        results[f"append_{batch}"] = _median_rate(n, _buffer_append(readings, batch, copies=True))
        results[f"ratio_append_seqs_{batch}"] = (results[f"append_seqs_{batch}"]
                                                 / results[f"raw_{batch}"])
        results[f"ratio_append_{batch}"] = results[f"append_{batch}"] / results[f"raw_{batch}"]
    results["pending_1000"] = _median_rate(n, _drain(readings, read=True))
    results["confirm_1000"] = _median_rate(n, _drain(readings, read=False))
    results.update(policy_action())
    return results


def main(argv: list[str]) -> None:
    n = int(argv[1]) if len(argv) > 1 else 200_000
    for name, value in run(n).items():
        if name.startswith(("ratio", "policy")):
            shown = f"{value:,.2f}"
        else:
            shown = f"{value:,.0f} readings/s"
        print(f"{name:24} {shown}")


if __name__ == "__main__":
    main(sys.argv)
