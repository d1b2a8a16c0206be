"""The edge telemetry buffer: seq assignment, paging, confirmation, disk budget, recovery.

Runs the real SqliteBuffer on tmp_path (fast enough; there is no FakeBuffer on purpose).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from edge_agent.buffer import BufferStorageError, SqliteBuffer
from edge_agent.buffer_files import read_seqfloor
from edge_agent.buffer_policy import BudgetEpisode, merge_ranges, rows_to_drop
from edge_agent.clock import FakeClock
from protocols.models import Quality, Reading, SeqRange, Unit

TS0 = 1_764_000_000_000
MIN_BUDGET = 1_000_000  # the lower bound of BufferSettings.max_bytes


def reading(i: int, *, channel: str = "power", ts: int | None = None,
            value: float | None = None, quality: Quality = Quality.GOOD) -> Reading:
    return Reading(meter_id="meter-1", channel=channel, unit=Unit.WATT,
                   ts=TS0 + i * 1000 if ts is None else ts,
                   value=float(i) if value is None and quality is not Quality.ERROR else value,
                   quality=quality)


def batch(n: int, start: int = 0) -> list[Reading]:
    return [reading(i) for i in range(start, start + n)]


def seqs(readings: list[Reading]) -> list[int]:
    return [r.seq for r in readings if r.seq is not None]


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "buffer.sqlite"


@pytest.fixture
def buffer(path: Path) -> Iterator[SqliteBuffer]:
    buf = SqliteBuffer(path, clock=FakeClock())
    report = buf.open()
    assert report.recovered_corrupt_file is None
    yield buf
    buf.close()


def test_append_assigns_increasing_seqs_and_round_trips_every_field(buffer: SqliteBuffer) -> None:
    inputs = [reading(0), reading(1, quality=Quality.ERROR),
              reading(2, channel="energy_import", value=12.5, quality=Quality.SUSPECT)]
    stored = buffer.append(inputs)
    assert seqs(stored) == [1, 2, 3]
    assert [r.model_copy(update={"seq": None}) for r in stored] == inputs
    assert buffer.pending() == stored
    assert buffer.append_seqs(batch(2)) == range(4, 6)
    assert buffer.append_seqs([]) == range(6, 6)


def test_seq_never_restarts_after_everything_is_confirmed_and_reopened(path: Path) -> None:
    buf = SqliteBuffer(path)
    buf.open()
    buf.append(batch(5))
    assert buf.confirm([SeqRange(first=1, last=5)]) == 5
    buf.close()

    reopened = SqliteBuffer(path)
    reopened.open()
    assert reopened.stats().last_seq == 5
    assert seqs(reopened.append(batch(2))) == [6, 7]
    reopened.close()


def test_seqs_erased_by_a_power_cut_are_never_handed_out_again(path: Path) -> None:
    buf = SqliteBuffer(path, seq_reservation=1000)
    buf.open()
    buf.append(batch(10))
    buf.close()
    # A power cut loses the last commits (seq 6..10 were maybe already sent) and the file
    # looks as if it was never closed cleanly.
    with sqlite3.connect(path) as conn:
        conn.execute("DELETE FROM readings WHERE seq > 5")
        conn.execute("UPDATE meta SET value = 5 WHERE key = 'last_seq'")
        conn.execute("UPDATE meta SET value = 0 WHERE key = 'clean_close'")
    conn.close()

    reopened = SqliteBuffer(path, seq_reservation=1000)
    reopened.open()
    assert seqs(reopened.append(batch(1)))[0] > 10
    assert read_seqfloor(path) >= reopened.stats().last_seq
    reopened.close()


def test_pending_returns_seq_order_and_pages_by_keyset(buffer: SqliteBuffer) -> None:
    buffer.append(batch(25))
    buffer.confirm([SeqRange(first=3, last=4)])
    pages: list[list[int]] = []
    after = 0
    while page := buffer.pending(after_seq=after, limit=10):
        pages.append(seqs(page))
        after = pages[-1][-1]
    assert pages == [[1, 2, *range(5, 13)], list(range(13, 23)), [23, 24, 25]]


def test_newest_pending_returns_the_latest_readings_in_seq_order(buffer: SqliteBuffer) -> None:
    buffer.append(batch(10))
    assert seqs(buffer.newest_pending(3)) == [8, 9, 10]
    assert seqs(buffer.newest_pending(50)) == list(range(1, 11))


def test_confirm_of_overlapping_and_repeated_ranges_deletes_each_reading_once(
        buffer: SqliteBuffer) -> None:
    buffer.append(batch(20))
    ranges = [SeqRange(first=1, last=5), SeqRange(first=4, last=8), SeqRange(first=1, last=2)]
    assert buffer.confirm(ranges) == 8
    assert buffer.confirm(ranges) == 0
    assert buffer.confirm([SeqRange(first=15, last=1_000)]) == 6
    stats = buffer.stats()
    assert stats.depth == 6
    assert seqs(buffer.pending()) == list(range(9, 15))
    assert stats.oldest_ts_ms == TS0 + 8 * 1000


def test_stats_of_an_empty_buffer(buffer: SqliteBuffer) -> None:
    stats = buffer.stats()
    assert (stats.depth, stats.oldest_ts_ms, stats.last_seq, stats.dropped_total) == (0, None, 0, 0)
    assert stats.size_bytes > 0


def fill_until(buf: SqliteBuffer, make: Callable[[int], list[Reading]], *, done: str) -> int:
    """Append ``make(0)``, ``make(1)``, ... until the named stats counter is non-zero."""
    appended = 0
    for round_no in range(400):
        readings = make(round_no)
        buf.append_seqs(readings)
        appended += len(readings)
        if getattr(buf.stats(), done) > 0:
            return appended
    raise AssertionError("the budget policy never ran")


def test_full_buffer_thins_oldest_to_last_reading_per_bucket_and_counts_it(path: Path) -> None:
    buf = SqliteBuffer(path, max_bytes=MIN_BUDGET, thin_to_minutes=15)
    buf.open()
    # Four channels, a reading every 10 s; the last reading of channel c0's first bucket failed.
    def make(round_no: int) -> list[Reading]:
        rows = [reading(i, channel=f"c{i % 4}", ts=TS0 + (i // 4) * 10_000)
                for i in range(round_no * 4000, (round_no + 1) * 4000)]
        if round_no == 0:
            rows[356] = reading(356, channel="c0", ts=rows[356].ts, quality=Quality.ERROR)
        return rows

    appended = fill_until(buf, make, done="thinned_total")

    stats = buf.stats()
    assert stats.size_bytes <= MIN_BUDGET
    assert stats.thinned_total > 0
    assert stats.depth + stats.dropped_total == appended  # nothing vanished uncounted
    oldest = buf.pending(limit=8)
    # One reading per channel and bucket: the last one of the bucket that carries a value.
    assert [(r.channel, r.ts) for r in oldest[:4]] == [
        ("c0", TS0 + 880_000), ("c1", TS0 + 890_000), ("c2", TS0 + 890_000),
        ("c3", TS0 + 890_000)]
    assert {r.channel for r in oldest[4:]} == {"c0", "c1", "c2", "c3"}
    assert all(r.ts // 900_000 == (TS0 + 900_000) // 900_000 for r in oldest[4:])
    buf.close()


def test_full_buffer_drops_oldest_when_thinning_is_not_enough_and_counters_persist(
        path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    buf = SqliteBuffer(path, max_bytes=MIN_BUDGET, thin_to_minutes=1)
    buf.open()
    def sparse(round_no: int) -> list[Reading]:  # one reading per 1-minute bucket
        return [reading(i, ts=TS0 + i * 120_000)
                for i in range(round_no * 1000, (round_no + 1) * 1000)]

    appended = fill_until(buf, sparse, done="dropped_total")
    rounds = appended // 1000
    for round_no in range(rounds, rounds + 20):  # keep it full: more actions, same episode
        buf.append_seqs(sparse(round_no))
        appended += 1000
    stats = buf.stats()
    assert stats.thinned_total == 0
    assert stats.dropped_total > 0
    assert stats.depth + stats.dropped_total == appended
    assert stats.size_bytes <= MIN_BUDGET
    assert seqs(buf.pending(limit=1))[0] == stats.dropped_total + 1  # the oldest went first
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, "one warning per full episode, not per append"
    buf.close()

    reopened = SqliteBuffer(path, max_bytes=MIN_BUDGET)
    reopened.open()
    assert reopened.stats().dropped_total == stats.dropped_total
    assert reopened.stats().depth == stats.depth
    reopened.close()


def test_corrupt_file_is_moved_aside_reported_and_seqs_stay_above_the_floor(
        path: Path, caplog: pytest.LogCaptureFixture) -> None:
    buf = SqliteBuffer(path, seq_reservation=50)
    buf.open()
    buf.append(batch(10))
    buf.close()
    path.write_bytes(b"this is not a database, it is garbage" * 200)

    fresh = SqliteBuffer(path, clock=FakeClock(start_ms=TS0), seq_reservation=50)
    with caplog.at_level(logging.ERROR):
        report = fresh.open()
    assert report.recovered_corrupt_file is not None
    assert report.recovered_corrupt_file.name.startswith("buffer.sqlite.corrupt-2025")
    assert report.recovered_corrupt_file.read_bytes().startswith(b"this is not a database")
    assert report.message is not None
    assert "corrupt" in report.message
    assert any(r.levelno == logging.ERROR for r in caplog.records)
    new_seq = seqs(fresh.append(batch(1)))[0]
    assert new_seq > 10
    assert fresh.stats().depth == 1
    fresh.close()


def test_corrupt_pages_keep_seqs_above_the_old_last_seq_even_without_a_floor_file(
        path: Path) -> None:
    buf = SqliteBuffer(path)
    buf.open()
    buf.append_seqs(batch(20_000))
    buf.close()
    path.with_name(path.name + ".seqfloor").unlink()
    with path.open("r+b") as f:  # smash the b-tree pages in the middle of the file
        f.seek(path.stat().st_size // 2)
        f.write(b"\xff" * 40_000)

    fresh = SqliteBuffer(path)
    report = fresh.open()
    assert report.recovered_corrupt_file is not None
    assert seqs(fresh.append(batch(1)))[0] > 20_000
    fresh.close()


def test_a_sqlite_file_of_another_program_is_moved_aside_not_destroyed(path: Path) -> None:
    path.parent.mkdir(parents=True)
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE photos (id INTEGER PRIMARY KEY)")
    conn.close()
    buf = SqliteBuffer(path)
    report = buf.open()
    assert report.recovered_corrupt_file is not None
    with sqlite3.connect(report.recovered_corrupt_file) as moved:
        assert moved.execute("SELECT name FROM sqlite_master").fetchall() == [("photos",)]
    moved.close()
    buf.close()


def test_a_second_writer_on_the_same_file_is_refused(buffer: SqliteBuffer, path: Path) -> None:
    with pytest.raises(BufferStorageError, match="in use"):
        SqliteBuffer(path).open()


def test_calls_before_open_raise_a_clear_error(path: Path) -> None:
    with pytest.raises(BufferStorageError, match="not open"):
        SqliteBuffer(path).pending()


def test_merge_ranges_sorts_and_merges_overlapping_and_adjacent() -> None:
    ranges = [SeqRange(first=10, last=12), SeqRange(first=1, last=3), SeqRange(first=4, last=5),
              SeqRange(first=11, last=11)]
    assert merge_ranges(ranges) == [(1, 5), (10, 12)]


def test_rows_to_drop_is_bounded_and_positive_while_over_target() -> None:
    assert rows_to_drop(used_bytes=900, target=1000, depth=10) == 0
    assert rows_to_drop(used_bytes=2000, target=1000, depth=100) == 53
    assert rows_to_drop(used_bytes=2000, target=1000, depth=1) == 1
    assert rows_to_drop(used_bytes=2000, target=1999, depth=10_000) >= 1


def test_budget_episode_warns_once_until_confirmations_resume() -> None:
    episode = BudgetEpisode()
    assert episode.record(thinned=0, dropped=0) is False
    assert episode.record(thinned=5, dropped=0) is True
    assert episode.record(thinned=0, dropped=7) is False
    assert episode.end() == (5, 7)
    assert episode.end() is None
    assert episode.record(thinned=0, dropped=1) is True


def test_appends_from_several_threads_get_distinct_seqs(buffer: SqliteBuffer) -> None:
    results: list[range] = []

    def worker() -> None:
        for _ in range(20):
            results.append(buffer.append_seqs(batch(10)))

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assigned = [seq for r in results for seq in r]
    assert sorted(assigned) == list(range(1, 801))
    assert buffer.stats().depth == 800
