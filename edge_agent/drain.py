"""Pure decisions of the telemetry drain: batch packing, the in-flight window, resends,
live-vs-backfill fairness and the publish rate limit.

No I/O and no asyncio here: the runtime reads the buffer, asks these classes what to send and
when, publishes, and reports acks back. Time is monotonic seconds passed in by the caller.

Delivery guarantee (end to end): a seq stays *in flight* from its first publish until the cloud
names it in a ``TelemetryAck``; a PUBACK plays no part (a broker may drop queued messages after
acknowledging them). A batch without an ack after ``ack_timeout_s`` is due for resend; its
readings are re-read from the buffer, so seqs already confirmed meanwhile are not re-sent.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from protocols.models import Reading, SeqRange, TelemetryBatch, encode

Source = Literal["live", "backfill"]
# A TelemetryBatch holds at most this many readings (protocols.models).
MAX_READINGS_PER_BATCH = 10_000
# The smallest encoded reading is ~80 bytes; reading this many rows always fills a batch.
MIN_READING_BYTES = 80


@dataclass(frozen=True)
class PackedBatch:
    """One ``TelemetryBatch`` payload ready to publish; ``seqs`` ascending."""

    payload: bytes
    seqs: tuple[int, ...]

    @property
    def first(self) -> int:
        return self.seqs[0]

    @property
    def last(self) -> int:
        return self.seqs[-1]


def read_limit(batch_max_bytes: int) -> int:
    """How many rows to read from the buffer so that one batch can be filled."""
    return min(MAX_READINGS_PER_BATCH, batch_max_bytes // MIN_READING_BYTES + 1)


def pack_batch(
    gateway_id: str,
    readings: Sequence[Reading],
    max_bytes: int,
    *,
    newest_first: bool = False,
    traceparent: str | None = None,
) -> PackedBatch | None:
    """Pack as many ``readings`` (each with a seq) as fit in ``max_bytes`` of encoded batch.

    Readings are taken in order (oldest first), or from the end when ``newest_first`` (for live
    data); a reading is never split, and the first one is always taken, so a batch never comes
    back empty for non-empty input. The payload lists readings in seq order. Returns None for
    no readings.
    """
    if not readings:
        return None
    ordered = list(reversed(readings)) if newest_first else list(readings)
    # Each reading is encoded once; the batch is those bytes inside the model's own envelope,
    # so the payload is byte for byte what encode(TelemetryBatch(...)) would give.
    head, tail = _envelope(gateway_id, ordered[0], traceparent)
    size = len(head) + len(tail) - 1  # -1: no comma before the first reading
    taken: list[tuple[int, bytes]] = []
    for reading in ordered[:MAX_READINGS_PER_BATCH]:
        part = encode(reading)
        if taken and size + len(part) + 1 > max_bytes:
            break
        size += len(part) + 1
        taken.append((_seq(reading), part))
    taken.sort(key=lambda item: item[0])
    payload = head + b",".join(part for _seq_, part in taken) + tail
    return PackedBatch(payload=payload, seqs=tuple(seq for seq, _part in taken))


def _envelope(gateway_id: str, sample: Reading, traceparent: str | None) -> tuple[bytes, bytes]:
    """The batch JSON before and after its readings list, cut from a one-reading batch."""
    one = encode(TelemetryBatch(gateway_id=gateway_id, readings=[sample],
                                traceparent=traceparent))
    part = encode(sample)
    cut = one.index(part)
    return one[:cut], one[cut + len(part):]


def _seq(reading: Reading) -> int:
    if reading.seq is None:
        raise ValueError("a reading leaves the buffer only with its seq")
    return reading.seq


@dataclass
class InFlightBatch:
    """A published batch whose seqs the cloud has not confirmed yet."""

    batch_id: int
    seqs: set[int]
    first: int
    last: int
    sent_at: float
    source: Source
    attempts: int = 1


@dataclass
class DrainPlanner:
    """The in-flight window, resend timers and the live/backfill turn order.

    Fairness: non-resend batches alternate between *live* (the newest pending readings above
    ``live_cursor``, the highest seq a live batch sent) and *backfill* (the backlog in seq
    order, through ``backfill_cursor``), so a backlog of any size delays a fresh reading by at
    most one backfill batch once a window slot is free, and the backlog itself still drains
    oldest first. A seq already in flight is never picked again until it is acked or its batch
    is due for resend.

    Invariant of ``backfill_cursor``: every pending seq <= cursor is in flight or was confirmed.
    """

    max_inflight: int
    ack_timeout_s: float
    backfill_cursor: int = 0
    live_cursor: int = 0
    _batches: dict[int, InFlightBatch] = field(default_factory=dict)
    _owner: dict[int, int] = field(default_factory=dict)  # seq -> batch_id
    _next_id: int = 1
    _last_source: Source = "backfill"

    @property
    def in_flight(self) -> int:
        """Number of batches awaiting an ack."""
        return len(self._batches)

    @property
    def in_flight_seqs(self) -> int:
        return len(self._owner)

    def has_slot(self) -> bool:
        return len(self._batches) < self.max_inflight

    def is_in_flight(self, seq: int) -> bool:
        return seq in self._owner

    def next_source(self) -> Source:
        """The turn after the last new batch: live and backfill alternate."""
        return "backfill" if self._last_source == "live" else "live"

    def select(self, readings: Iterable[Reading], source: Source) -> list[Reading]:
        """The readings of a buffer read that may go into a new batch: not in flight and, for
        live, newer than every live batch so far.

        For backfill, when every row read is already in flight the cursor moves past them, so
        the caller's next read makes progress.
        """
        rows = sorted(readings, key=_seq)
        floor = self.live_cursor if source == "live" else 0
        picked = [r for r in rows if _seq(r) not in self._owner and _seq(r) > floor]
        if source == "backfill" and rows and not picked:
            self.backfill_cursor = max(self.backfill_cursor, _seq(rows[-1]))
        return picked

    def sent(self, seqs: Sequence[int], source: Source, now: float) -> InFlightBatch:
        """Record a new batch as published at monotonic ``now``."""
        if not seqs:
            raise ValueError("a batch has at least one seq")
        if any(seq in self._owner for seq in seqs):
            raise ValueError("a seq in flight must not be sent in a second batch")
        batch = InFlightBatch(self._next_id, set(seqs), min(seqs), max(seqs), now, source)
        self._next_id += 1
        self._batches[batch.batch_id] = batch
        for seq in seqs:
            self._owner[seq] = batch.batch_id
        self._last_source = source
        if source == "backfill":
            self.backfill_cursor = max(self.backfill_cursor, batch.last)
        else:
            self.live_cursor = max(self.live_cursor, batch.last)
        return batch

    def rewind(self, seq: int) -> None:
        """Readings from ``seq`` on became pending below the cursor (held ones released):
        the next backfill reads from there again (seqs in flight are still skipped)."""
        self.backfill_cursor = min(self.backfill_cursor, seq - 1)

    def due_resends(self, now: float) -> list[InFlightBatch]:
        """Batches with no ack for ``ack_timeout_s``, oldest first."""
        due = [b for b in self._batches.values() if now - b.sent_at >= self.ack_timeout_s]
        return sorted(due, key=lambda b: b.sent_at)

    def resent(self, batch_id: int, still_pending: Iterable[int], now: float) -> None:
        """Record a resend of ``batch_id`` holding ``still_pending`` of its seqs.

        Seqs of the batch no longer in the buffer (confirmed by a late ack, or thinned) leave
        the window; if none remain the batch is released. An unknown ``batch_id`` (acked in
        the meantime) is ignored.
        """
        batch = self._batches.get(batch_id)
        if batch is None:  # an ack released all of it while the caller re-read the buffer
            return
        keep = set(still_pending) & batch.seqs
        for seq in batch.seqs - keep:
            del self._owner[seq]
        batch.seqs = keep
        if not keep:
            del self._batches[batch_id]
            return
        batch.sent_at = now
        batch.attempts += 1

    def acked(self, ranges: Iterable[SeqRange]) -> int:
        """Release every in-flight seq the ack names; return how many were released.

        Seqs not in flight (a late ack after a restart, a duplicate ack) are ignored here; the
        buffer's confirm is what deletes them.
        """
        released = 0
        for rng in ranges:
            for batch in list(self._batches.values()):
                if batch.last < rng.first or batch.first > rng.last:
                    continue
                hit = {s for s in batch.seqs if rng.first <= s <= rng.last}
                for seq in hit:
                    del self._owner[seq]
                batch.seqs -= hit
                released += len(hit)
                if not batch.seqs:
                    del self._batches[batch.batch_id]
        return released

    def next_deadline(self) -> float | None:
        """Monotonic time when the oldest in-flight batch becomes due, or None if idle."""
        if not self._batches:
            return None
        return min(b.sent_at for b in self._batches.values()) + self.ack_timeout_s


class RateLimiter:
    """Two token buckets: publishes per second and bytes per second.

    Buckets hold one second's worth (bursts up to the per-second limit), and the byte bucket at
    least ``max_publish_bytes`` so a maximal batch is always possible. AWS IoT Core allows 100
    publishes/s and 512 KB/s per connection: the defaults in ``MqttSettings``.
    """

    def __init__(self, rate_per_s: float, bytes_per_s: float, *, max_publish_bytes: int,
                 now: float) -> None:
        if rate_per_s <= 0 or bytes_per_s <= 0:
            raise ValueError("rate limits must be positive")
        self.rate_per_s = rate_per_s
        self.bytes_per_s = bytes_per_s
        self._cap_msgs = max(1.0, rate_per_s)
        self._cap_bytes = max(float(bytes_per_s), float(max_publish_bytes))
        self._msgs = self._cap_msgs
        self._bytes = self._cap_bytes
        self._at = now

    def _refill(self, now: float) -> None:
        elapsed = max(0.0, now - self._at)
        self._at = max(self._at, now)
        self._msgs = min(self._cap_msgs, self._msgs + elapsed * self.rate_per_s)
        self._bytes = min(self._cap_bytes, self._bytes + elapsed * self.bytes_per_s)

    def delay(self, size: int, now: float) -> float:
        """Seconds to wait before a publish of ``size`` bytes is allowed (0: go now)."""
        self._refill(now)
        need_bytes = min(float(size), self._cap_bytes)
        wait_msgs = max(0.0, (1.0 - self._msgs) / self.rate_per_s)
        wait_bytes = max(0.0, (need_bytes - self._bytes) / self.bytes_per_s)
        wait = max(wait_msgs, wait_bytes)
        return wait if wait > 1e-9 else 0.0  # float dust must not cause a busy micro-sleep

    def consume(self, size: int, now: float) -> None:
        """Take the tokens of one publish (call when :meth:`delay` returned 0)."""
        self._refill(now)
        self._msgs -= 1.0
        self._bytes -= float(size)
