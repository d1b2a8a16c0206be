"""The drain's pure decisions: packing, the in-flight window, resends, fairness, rate limits."""

from __future__ import annotations

from itertools import islice

from edge_agent.backoff import Backoff
from edge_agent.clock import FakeClock
from edge_agent.drain import DrainPlanner, RateLimiter, pack_batch, read_limit
from protocols.models import Reading, SeqRange, TelemetryBatch, Unit, decode, encode

GW = "gw-1"
KB = 1024
TS = 1_764_000_000_000


def reading(seq: int, *, meter: str = "m1", channel: str = "power_w") -> Reading:
    return Reading(
        meter_id=meter, channel=channel, value=1234.5 + seq, unit=Unit.WATT, ts=TS + seq, seq=seq
    )


def readings(first: int, last: int) -> list[Reading]:
    return [reading(s) for s in range(first, last + 1)]


# --- packing -----------------------------------------------------------------------------


def test_batches_never_exceed_128_kb_and_keep_every_reading_once() -> None:
    pending = readings(1, 5000)
    sent: list[int] = []
    rest = pending
    while rest:
        batch = pack_batch(GW, rest, 128 * KB)
        assert batch is not None
        assert len(batch.payload) <= 128 * KB
        sent.extend(batch.seqs)
        rest = rest[len(batch.seqs) :]
    assert sent == list(range(1, 5001))


def test_a_packed_batch_is_nearly_full_and_decodes_to_the_same_readings() -> None:
    pending = readings(1, 3000)
    batch = pack_batch(GW, pending, 128 * KB)
    assert batch is not None
    decoded = decode(TelemetryBatch, batch.payload)
    assert [r.seq for r in decoded.readings] == list(batch.seqs)
    assert decoded.readings == pending[: len(batch.seqs)]
    one_more = len(encode(pending[len(batch.seqs)])) + 1
    assert len(batch.payload) + one_more > 128 * KB


def test_a_single_large_reading_always_fits_in_the_smallest_batch() -> None:
    big = Reading(meter_id="m" * 64, channel="c" * 64, value=1.0, unit=Unit.VARH, ts=TS, seq=7)
    batch = pack_batch(GW, [big, reading(8)], 1024)
    assert batch is not None
    assert batch.seqs[0] == 7
    assert len(batch.payload) <= 1024


def test_newest_first_packing_takes_the_newest_readings_in_seq_order() -> None:
    batch = pack_batch(GW, readings(1, 5000), 16 * KB, newest_first=True)
    assert batch is not None
    assert batch.last == 5000
    assert list(batch.seqs) == sorted(batch.seqs)
    assert batch.first > 4800


def test_read_limit_reads_enough_rows_to_fill_a_batch() -> None:
    batch = pack_batch(GW, readings(1, read_limit(128 * KB)), 128 * KB)
    assert batch is not None
    assert len(batch.seqs) < read_limit(128 * KB)


def test_nothing_to_pack_gives_no_batch() -> None:
    assert pack_batch(GW, [], 128 * KB) is None


# --- in-flight window, acks, resends -----------------------------------------------------


def ack(*pairs: tuple[int, int]) -> list[SeqRange]:
    return [SeqRange(first=a, last=b) for a, b in pairs]


def test_window_bounds_the_batches_in_flight() -> None:
    planner = DrainPlanner(max_inflight=3, ack_timeout_s=30)
    for i in range(3):
        assert planner.has_slot()
        planner.sent([i * 10 + 1, i * 10 + 2], "backfill", now=0)
    assert not planner.has_slot()
    planner.acked(ack((1, 2)))
    assert planner.has_slot()
    assert planner.in_flight == 2


def test_ack_releases_only_the_named_seqs() -> None:
    planner = DrainPlanner(max_inflight=4, ack_timeout_s=30)
    planner.sent([1, 2, 3, 4], "backfill", now=0)
    assert planner.acked(ack((2, 3))) == 2
    assert planner.in_flight == 1
    assert planner.is_in_flight(1) and planner.is_in_flight(4)
    assert not planner.is_in_flight(2)
    assert planner.acked(ack((1, 1), (4, 4))) == 2
    assert planner.in_flight == 0
    assert planner.next_deadline() is None


def test_ack_for_seqs_not_in_flight_is_ignored() -> None:
    planner = DrainPlanner(max_inflight=4, ack_timeout_s=30)
    planner.sent([10, 11], "live", now=0)
    assert planner.acked(ack((1, 5), (100, 200))) == 0
    assert planner.in_flight == 1


def test_unacked_batch_is_due_for_resend_after_the_timeout_only() -> None:
    clock = FakeClock()
    planner = DrainPlanner(max_inflight=4, ack_timeout_s=30)
    batch = planner.sent([1, 2, 3], "backfill", now=clock.monotonic())
    clock.advance(29.9)
    assert planner.due_resends(clock.monotonic()) == []
    assert planner.next_deadline() == batch.sent_at + 30
    clock.advance(0.1)
    assert [b.batch_id for b in planner.due_resends(clock.monotonic())] == [batch.batch_id]


def test_resend_restarts_the_timer_and_drops_seqs_no_longer_pending() -> None:
    planner = DrainPlanner(max_inflight=4, ack_timeout_s=30)
    batch = planner.sent([1, 2, 3], "backfill", now=0)
    planner.resent(batch.batch_id, [1, 3], now=30)
    assert batch.attempts == 2
    assert planner.due_resends(59) == []
    assert not planner.is_in_flight(2)
    assert planner.is_in_flight(1) and planner.is_in_flight(3)


def test_resend_with_nothing_left_in_the_buffer_releases_the_batch() -> None:
    planner = DrainPlanner(max_inflight=1, ack_timeout_s=30)
    batch = planner.sent([1, 2], "live", now=0)
    planner.resent(batch.batch_id, [], now=30)
    assert planner.in_flight == 0
    assert planner.has_slot()


def test_a_seq_in_flight_is_never_selected_again() -> None:
    planner = DrainPlanner(max_inflight=4, ack_timeout_s=30)
    planner.sent([3, 4], "live", now=0)
    picked = planner.select(readings(1, 6), "backfill")
    assert [r.seq for r in picked] == [1, 2, 5, 6]


def test_backfill_cursor_skips_a_read_that_is_entirely_in_flight() -> None:
    planner = DrainPlanner(max_inflight=4, ack_timeout_s=30)
    planner.sent(list(range(1, 11)), "live", now=0)
    assert planner.select(readings(1, 10), "backfill") == []
    assert planner.backfill_cursor == 10


# --- fairness ----------------------------------------------------------------------------


class ListBuffer:
    """A minimal in-memory pending list with the buffer's two read orders."""

    def __init__(self) -> None:
        self.rows: dict[int, Reading] = {}
        self.last_seq = 0

    def append(self, count: int) -> list[int]:
        seqs = []
        for _ in range(count):
            self.last_seq += 1
            self.rows[self.last_seq] = reading(self.last_seq)
            seqs.append(self.last_seq)
        return seqs

    def pending(self, after_seq: int, limit: int) -> list[Reading]:
        # rows is insertion-ordered, which is seq order.
        return list(islice((r for s, r in self.rows.items() if s > after_seq), limit))

    def newest_pending(self, limit: int) -> list[Reading]:
        return list(reversed(list(islice(reversed(self.rows.values()), limit))))

    def confirm(self, seqs: set[int]) -> None:
        for seq in seqs:
            self.rows.pop(seq, None)


def next_batch(planner: DrainPlanner, buf: ListBuffer, limit: int) -> tuple[int, ...]:
    source = planner.next_source()
    for src in (source, "live" if source == "backfill" else "backfill"):
        rows = (
            buf.newest_pending(limit)
            if src == "live"
            else buf.pending(planner.backfill_cursor, limit)
        )
        picked = planner.select(rows, src)
        batch = pack_batch(GW, picked, 128 * KB, newest_first=src == "live")
        if batch is not None:
            planner.sent(batch.seqs, src, now=0)
            return batch.seqs
    return ()


def test_live_readings_are_sent_within_two_batches_despite_a_100k_backlog() -> None:
    buf = ListBuffer()
    buf.append(100_000)
    planner = DrainPlanner(max_inflight=8, ack_timeout_s=30)
    limit = read_limit(128 * KB)
    waits = []
    for _ in range(40):
        live = set(buf.append(10))
        for n in range(1, 100):
            seqs = set(next_batch(planner, buf, limit))
            # The cloud acks every batch at once: release and delete.
            planner.acked([SeqRange(first=min(seqs), last=max(seqs))])
            buf.confirm(seqs)
            live -= seqs
            if not live:
                waits.append(n)
                break
    assert waits and max(waits) <= 2
    assert len(buf.rows) < 100_000  # the backlog drained meanwhile


def test_backlog_drains_in_seq_order_from_the_oldest() -> None:
    buf = ListBuffer()
    buf.append(3000)
    planner = DrainPlanner(max_inflight=8, ack_timeout_s=30)
    planner.sent([2999, 3000], "live", now=0)  # make the next turn backfill
    seqs = next_batch(planner, buf, read_limit(128 * KB))
    assert seqs[0] == 1
    assert list(seqs) == list(range(1, len(seqs) + 1))


def test_every_pending_reading_is_sent_exactly_once_without_acks() -> None:
    buf = ListBuffer()
    buf.append(5000)
    planner = DrainPlanner(max_inflight=100, ack_timeout_s=30)
    sent: list[int] = []
    while seqs := next_batch(planner, buf, read_limit(128 * KB)):
        sent.extend(seqs)
        if len(sent) < 4000:
            buf.append(3)  # live data keeps arriving while the backlog drains
    assert len(sent) == len(set(sent))
    assert set(sent) == set(buf.rows)


# --- rate limit --------------------------------------------------------------------------


def drive(limiter: RateLimiter, clock: FakeClock, size: int, seconds: float) -> tuple[int, int]:
    """Publish as fast as the limiter allows for ``seconds`` of fake time."""
    end = clock.monotonic() + seconds
    count = volume = 0
    while clock.monotonic() < end:
        wait = limiter.delay(size, clock.monotonic())
        if wait > 0:
            clock.advance(wait)
            continue
        limiter.consume(size, clock.monotonic())
        count += 1
        volume += size
    return count, volume


def test_publish_rate_stays_within_100_per_second() -> None:
    clock = FakeClock()
    limiter = RateLimiter(100, 512 * KB, max_publish_bytes=128 * KB, now=clock.monotonic())
    count, _ = drive(limiter, clock, 200, seconds=10)
    assert count <= 100 * 10 + 100  # one second of burst
    assert count >= 100 * 10


def test_byte_rate_stays_within_512_kb_per_second() -> None:
    clock = FakeClock()
    limiter = RateLimiter(100, 512 * KB, max_publish_bytes=128 * KB, now=clock.monotonic())
    count, volume = drive(limiter, clock, 128 * KB, seconds=10)
    assert volume <= 512 * KB * 10 + 512 * KB
    assert volume >= 512 * KB * 9
    assert count < 100 * 10


def test_a_publish_larger_than_the_byte_budget_still_goes_out() -> None:
    clock = FakeClock()
    limiter = RateLimiter(100, 1 * KB, max_publish_bytes=128 * KB, now=clock.monotonic())
    count, _ = drive(limiter, clock, 128 * KB, seconds=300)
    assert 1 <= count <= 4


def test_rate_limit_is_configurable() -> None:
    clock = FakeClock()
    limiter = RateLimiter(5, 512 * KB, max_publish_bytes=128 * KB, now=clock.monotonic())
    count, _ = drive(limiter, clock, 100, seconds=10)
    assert 50 <= count <= 55


def test_reconnect_backoff_grows_with_jitter_and_stays_bounded() -> None:
    backoff = Backoff(1.0, 120.0, jitter=0.2, random=lambda: 0.5)
    delays = [backoff.delay(n) for n in range(1, 12)]
    assert delays[0] == 0.9
    assert delays == sorted(delays)
    assert max(delays) <= 120.0


def test_backlog_goes_out_oldest_first_while_live_data_has_its_own_turns() -> None:
    buf = ListBuffer()
    buf.append(20_000)
    planner = DrainPlanner(max_inflight=1000, ack_timeout_s=30)
    backfill_firsts = []
    live_seen: list[int] = []
    for _ in range(10):
        new = buf.append(5)
        before = planner.next_source()
        seqs = next_batch(planner, buf, read_limit(128 * KB))
        if before == "backfill":
            backfill_firsts.append(seqs[0])
        else:
            live_seen.extend(seqs)
        assert set(new) <= set(live_seen) or before == "backfill"
    # Backfill batches follow each other in seq order from the oldest reading.
    assert backfill_firsts[0] == 1
    assert backfill_firsts == sorted(backfill_firsts)
