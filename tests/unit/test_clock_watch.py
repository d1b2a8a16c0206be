"""Clock correction with a fake clock: readings before sync are held, re-stamped exactly from
monotonic time once sync is seen, or sent flagged ``unsynced`` when it comes too late or the
gateway rebooted meanwhile. Real SqliteBuffer on tmp_path, fake clock and sync source."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloud_sync.bootstrap import build_store, load_settings
from cloud_sync.db import migrate
from cloud_sync.ports import ReadingsQuery
from edge_agent.buffer import SqliteBuffer
from edge_agent.clock import FakeClock
from edge_agent.clock_sync import FakeClockSync, status_synced
from edge_agent.clock_watch import ClockWatch
from edge_agent.config import AgentConfig
from edge_agent.ports import Message
from edge_agent.runtime import Agent
from edge_agent.scheduler import FakePoller
from edge_agent.uplink import FakeUplink
from protocols import topics
from protocols.models import Quality, Reading, TelemetryAck, TelemetryBatch, Unit, decode, encode

BOOT_WALL = 1_700_000_000_000  # what a Pi without RTC believes at boot (2023)
NTP_STEP_S = 86_400.0 * 400  # the true time is ~400 days later


def reading(clock: FakeClock, value: float, quality: Quality = Quality.GOOD) -> Reading:
    return Reading(meter_id="grid", channel="power", unit=Unit.WATT, ts=clock.now_ms(),
                   value=None if quality is Quality.ERROR else value, quality=quality)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(start_ms=BOOT_WALL)


@pytest.fixture
def buffer(tmp_path: Path, clock: FakeClock) -> Iterator[SqliteBuffer]:
    buf = SqliteBuffer(tmp_path / "buffer.sqlite", clock=clock)
    buf.open()
    yield buf
    buf.close()


def watch(buffer: SqliteBuffer, clock: FakeClock, sync: FakeClockSync, boot: str = "boot-1",
          hold_max_s: float = 3600.0) -> tuple[ClockWatch, list[int]]:
    rewinds: list[int] = []
    made = ClockWatch(sync, clock, buffer, boot_id=boot, hold_max_s=hold_max_s,
                      on_release=lambda r: rewinds.append(r.first_seq or 0))
    return made, rewinds


def append(buffer: SqliteBuffer, w: ClockWatch, readings: list[Reading]) -> range:
    return buffer.append_seqs(readings, unsynced=w.stamp())


def test_kernel_status_without_sta_unsync_means_synced() -> None:
    assert status_synced(0x2001)  # STA_PLL | STA_NANO: disciplined
    assert not status_synced(0x0040)  # STA_UNSYNC
    assert not status_synced(0x2041)


async def test_readings_before_sync_are_held_then_get_their_true_time(
        buffer: SqliteBuffer, clock: FakeClock) -> None:
    sync = FakeClockSync()
    w, rewinds = watch(buffer, clock, sync)
    await w.check_once()
    taken_at = []
    for i in range(5):
        taken_at.append(clock.monotonic())
        append(buffer, w, [reading(clock, float(i))])
        clock.advance(10)
    assert buffer.pending() == []  # nothing leaves with a wrong time
    assert buffer.newest_pending(10) == []
    assert buffer.stats().held_unsynced == 5

    clock.jump_wall(NTP_STEP_S)  # NTP steps the clock; monotonic time does not move
    true_wall_minus_mono = clock.now_ms() - round(clock.monotonic() * 1000)
    sync.is_synced = True
    done = await w.check_once()

    sent = buffer.pending()
    assert done.corrected == 5 and done.flagged == 0
    assert [r.ts for r in sent] == [round(m * 1000) + true_wall_minus_mono for m in taken_at]
    assert [r.ts - BOOT_WALL for r in sent] == [round(NTP_STEP_S * 1000) + 10_000 * i
                                                for i in range(5)]
    assert {r.quality for r in sent} == {Quality.GOOD}
    assert rewinds == [1]
    assert buffer.stats().held_unsynced == 0
    # From now on wall time is trusted: new readings are not held.
    assert w.stamp() is None
    append(buffer, w, [reading(clock, 9.0)])
    assert len(buffer.pending()) == 6


async def test_readings_never_corrected_in_time_are_sent_flagged(
        buffer: SqliteBuffer, clock: FakeClock) -> None:
    w, rewinds = watch(buffer, clock, FakeClockSync(), hold_max_s=600)
    append(buffer, w, [reading(clock, 1.0), reading(clock, 0.0, Quality.ERROR)])
    clock.advance(300)
    append(buffer, w, [reading(clock, 2.0)])
    clock.advance(301)  # the first two are now held for 601 s > 600 s
    done = await w.check_once()
    sent = buffer.pending()
    assert done.flagged == 2
    assert [(r.value, r.quality, r.ts) for r in sent] == [
        (1.0, Quality.UNSYNCED, BOOT_WALL), (None, Quality.ERROR, BOOT_WALL)]
    assert rewinds == [1]
    assert buffer.stats().held_unsynced == 1  # the younger one still waits for sync


async def test_readings_of_an_earlier_boot_are_flagged_at_start(
        tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "buffer.sqlite"
    first = SqliteBuffer(path, clock=clock)
    first.open()
    w1, _ = watch(first, clock, FakeClockSync(), boot="boot-1")
    append(first, w1, [reading(clock, 1.0), reading(clock, 2.0)])
    first.close()  # power cut and reboot before NTP ever answered

    second = SqliteBuffer(path, clock=clock)
    second.open()
    try:
        sync = FakeClockSync()
        w2, rewinds = watch(second, clock, sync, boot="boot-2")
        assert second.pending() == []
        done = await w2.check_once()  # still unsynced, but boot-1's monotonic clock is gone
        sent = second.pending()
    finally:
        second.close()
    assert done.flagged == 2
    assert {r.quality for r in sent} == {Quality.UNSYNCED}
    assert rewinds == [1]


async def test_an_agent_restart_in_the_same_boot_still_corrects(
        tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "buffer.sqlite"
    first = SqliteBuffer(path, clock=clock)
    first.open()
    w1, _ = watch(first, clock, FakeClockSync(), boot="boot-1")
    append(first, w1, [reading(clock, 1.0)])
    first.close()
    clock.advance(5)
    clock.jump_wall(NTP_STEP_S)
    second = SqliteBuffer(path, clock=clock)
    second.open()
    try:
        sync = FakeClockSync()
        sync.is_synced = True
        w2, _ = watch(second, clock, sync, boot="boot-1")
        done = await w2.check_once()
        sent = second.pending()
    finally:
        second.close()
    assert done.corrected == 1
    assert sent[0].ts == BOOT_WALL + round(NTP_STEP_S * 1000)


def test_a_schema_1_buffer_is_upgraded_and_keeps_its_readings(tmp_path: Path) -> None:
    path = tmp_path / "buffer.sqlite"
    conn = sqlite3.connect(path)
    conn.executescript(
        "CREATE TABLE streams (id INTEGER PRIMARY KEY, meter_id TEXT NOT NULL, "
        "channel TEXT NOT NULL, unit TEXT NOT NULL, UNIQUE (meter_id, channel, unit));"
        "CREATE TABLE readings (seq INTEGER PRIMARY KEY, stream INTEGER NOT NULL, "
        "ts INTEGER NOT NULL, value REAL, quality INTEGER NOT NULL);"
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;"
        "INSERT INTO streams VALUES (1, 'grid', 'power', 'W');"
        f"INSERT INTO readings VALUES (7, 1, {BOOT_WALL}, 42.0, 0);"
        "INSERT INTO meta VALUES ('last_seq', 7), ('clean_close', 1);"
        "PRAGMA user_version = 1;")
    conn.close()
    buf = SqliteBuffer(path)
    report = buf.open()
    try:
        assert report.recovered_corrupt_file is None
        assert [(r.seq, r.value) for r in buf.pending()] == [(7, 42.0)]
        assert buf.append_seqs([Reading(meter_id="grid", channel="power", unit=Unit.WATT,
                                        ts=BOOT_WALL, value=1.0)]) == range(8, 9)
    finally:
        buf.close()


async def test_agent_sends_held_readings_only_after_correction(tmp_path: Path,
                                                               clock: FakeClock) -> None:
    """Through the agent and its drain: nothing is published while unsynced; after sync the
    backlog below the drain's cursor is published with corrected times, then acked."""
    gw = "gw-clock"

    def cloud(message: Message) -> list[Message]:
        if message.topic != topics.telemetry(gw):
            return []
        batch = decode(TelemetryBatch, message.payload)
        seq = [r.seq or 0 for r in batch.readings]
        ack = TelemetryAck(gateway_id=gw, ranges=[{"first": min(seq), "last": max(seq)}])
        return [Message(topics.telemetry_ack(gw), encode(ack))]

    uplink = FakeUplink(cloud)
    sync = FakeClockSync()
    config = AgentConfig(gateway_id=gw, data_dir=tmp_path / "data")
    agent = Agent(config, uplink=uplink, clock=clock, poller=FakePoller, clock_sync=sync)
    await agent.start()
    try:
        await agent.ingest([reading(clock, 1.0), reading(clock, 2.0)])
        clock.advance(60)
        await agent.ingest([reading(clock, 3.0)])
        telemetry = [m for m in uplink.published if m.topic == topics.telemetry(gw)]
        assert telemetry == []
        clock.jump_wall(NTP_STEP_S)
        sync.is_synced = True
        await agent.clock_watch.check_once()
        await agent.ingest([reading(clock, 4.0)])
        for _ in range(500):  # the drain runs on its own task: let it publish and apply acks
            if agent.buffer.stats().depth == 0:
                break
            await asyncio.sleep(0.01)
        left = agent.buffer.stats().depth
    finally:
        await agent.stop()
    sent = [r for m in uplink.published if m.topic == topics.telemetry(gw)
            for r in decode(TelemetryBatch, m.payload).readings]
    step = round(NTP_STEP_S * 1000)
    assert sorted((r.value, r.ts) for r in sent) == [
        (1.0, BOOT_WALL + step), (2.0, BOOT_WALL + step), (3.0, BOOT_WALL + 60_000 + step),
        (4.0, BOOT_WALL + 60_000 + step)]
    assert left == 0


def test_the_cloud_stores_a_flagged_reading_as_unsynced(tmp_path: Path) -> None:
    settings = load_settings(db_url=f"sqlite:///{tmp_path / 'cloud.sqlite'}", data_dir=tmp_path)
    store = build_store(settings)
    migrate.upgrade(store.engine)
    store.add_gateway("gw-1")
    batch = decode(TelemetryBatch, encode(TelemetryBatch(gateway_id="gw-1", readings=[
        Reading(meter_id="grid", channel="power", unit=Unit.WATT, ts=BOOT_WALL, value=5.0,
                quality=Quality.UNSYNCED, seq=1)])))
    try:
        assert store.ingest([batch], []) == 1
        stored = store.readings(ReadingsQuery(gateway_id="gw-1"))
    finally:
        store.engine.dispose()
    assert [(r.value, r.quality) for r in stored] == [(5.0, "unsynced")]
