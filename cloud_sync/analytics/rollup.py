"""Energy per 15-minute bucket from meter readings: pure maths, no I/O.

Two sources, in this order of trust:

- **cumulative counters** (``energy_import``, ``energy_export``, ``energy_production``, Wh):
  the energy between two consecutive good readings is their difference, spread over the
  buckets the interval overlaps in proportion to time. A 15-minute bucket whose edges fall on
  readings is therefore exact; a gap (an outage the gateway never backfilled) keeps the total
  exact and only estimates where inside the gap it fell (flagged ``GAP``).
  A counter that went down is a **reset**: the new value is the energy counted since zero, if
  that is physically possible in the interval (at most ``max_power_w``), else the meter was
  **replaced** by one that starts elsewhere and the interval's energy is unknown (0, flagged
  ``REPLACED``). A rise no home could draw (above ``max_power_w``) is treated the same way.
- **power** (W), only for meters without a counter: each reading holds until the next one
  (the way a polled meter shows it), for at most ``max_hold_ms``; positive power is import,
  negative is export. Longer silences count nothing and are flagged ``GAP``.

Buckets are keyed by their UTC start in epoch ms: every real time zone's offset is a multiple
of 15 minutes, so these buckets are zone-free and hours and days in a home's zone are unions of
them (:mod:`cloud_sync.analytics.calendar`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import IntFlag
from itertools import pairwise

QUARTER_MS = 900_000
HOUR_MS = 3_600_000
COUNTER_CHANNELS = ("energy_import", "energy_export", "energy_production")
POWER_CHANNEL = "power"
# Channels whose new readings make rollups dirty.
ROLLUP_SOURCE_CHANNELS = (*COUNTER_CHANNELS, POWER_CHANNEL)


class Flag(IntFlag):
    """Why a bucket's energy is less than certain (stored as a small integer bitmask)."""

    NONE = 0
    GAP = 1  # part of the bucket lies in an interval longer than the gap limit: estimated
    RESET = 2  # a counter reset inside: counted from zero
    REPLACED = 4  # a meter replacement or impossible jump inside: that interval counts 0
    INTEGRATED = 8  # from power readings, not a counter


@dataclass(frozen=True)
class Sample:
    """One good reading: UTC epoch ms and value (Wh for counters, W for power)."""

    ts: int
    value: float


_GAP, _RESET, _REPLACED, _INTEGRATED = (int(f) for f in (Flag.GAP, Flag.RESET, Flag.REPLACED,
                                                          Flag.INTEGRATED))


@dataclass
class Bucket:
    wh: float = 0.0
    flags: int = 0  # a Flag bitmask, kept a plain int: this is the rollups' inner loop


@dataclass(frozen=True)
class CounterRules:
    """Limits that tell energy from meter events; defaults suit a home connection."""

    max_power_w: float = 100_000.0  # above any home's connection: more is a meter event
    step_allowance_wh: float = 10.0  # counters move in steps (Eastron shows 10 Wh)
    gap_ms: int = QUARTER_MS  # longer intervals are spread linearly and flagged GAP
    max_hold_ms: int = QUARTER_MS  # power readings hold at most this long


DEFAULT_RULES = CounterRules()
Buckets = dict[int, Bucket]


def floor_quarter(ts: int) -> int:
    return ts - ts % QUARTER_MS


def ceil_quarter(ts: int) -> int:
    return -(-ts // QUARTER_MS) * QUARTER_MS


def spread(out: Buckets, t0: int, t1: int, wh: float, flags: int, *,
           lo: int, hi: int) -> None:
    """Add ``wh`` spread evenly over ``[t0, t1)`` to the buckets it overlaps inside ``[lo, hi)``."""
    a, b = max(t0, lo), min(t1, hi)
    if b <= a or t1 <= t0:
        return
    per_ms = wh / (t1 - t0)
    start = floor_quarter(a)
    while start < b:
        end = start + QUARTER_MS
        part = min(end, b) - max(start, a)
        bucket = out.get(start)
        if bucket is None:
            bucket = out[start] = Bucket()
        bucket.wh += part * per_ms
        bucket.flags |= flags
        start = end


def dedupe(samples: Iterable[Sample]) -> list[Sample]:
    """Sorted by time, one sample per timestamp (the last one given wins)."""
    by_ts = {s.ts: s for s in samples}
    return [by_ts[ts] for ts in sorted(by_ts)]


def interval_energy(a: Sample, b: Sample, rules: CounterRules) -> tuple[float, int]:
    """Energy between two consecutive counter samples, and what happened in between
    (a :class:`Flag` bitmask)."""
    limit = rules.max_power_w * (b.ts - a.ts) / HOUR_MS + rules.step_allowance_wh
    delta = b.value - a.value
    flags = _GAP if b.ts - a.ts > rules.gap_ms else 0
    if 0.0 <= delta <= limit:
        return delta, flags
    if delta < 0.0 and 0.0 <= b.value <= limit:
        return b.value, flags | _RESET
    return 0.0, flags | _REPLACED


def counter_buckets(samples: Sequence[Sample], lo: int, hi: int,
                    rules: CounterRules = DEFAULT_RULES) -> Buckets:
    """Energy (Wh) per bucket inside ``[lo, hi)`` from counter samples sorted by time.

    Give every sample from the last one before ``lo`` to the first one at or after ``hi``:
    intervals that cross the edges are counted for their part inside.
    """
    out: Buckets = {}
    for a, b in pairwise(samples):
        if b.ts <= a.ts:
            continue
        wh, flags = interval_energy(a, b, rules)
        spread(out, a.ts, b.ts, wh, flags, lo=lo, hi=hi)
    return out


def power_buckets(samples: Sequence[Sample], lo: int, hi: int,
                  rules: CounterRules = DEFAULT_RULES) -> tuple[Buckets, Buckets]:
    """(import, export) energy per bucket inside ``[lo, hi)`` from power samples (W)."""
    imp: Buckets = {}
    exp: Buckets = {}
    for a, b in pairwise(samples):
        if b.ts <= a.ts:
            continue
        held = min(b.ts, a.ts + rules.max_hold_ms)
        flags = _INTEGRATED | (_GAP if held < b.ts else 0)
        wh = abs(a.value) * (held - a.ts) / HOUR_MS
        spread(imp if a.value >= 0 else exp, a.ts, held, wh, flags, lo=lo, hi=hi)
        if held < b.ts:  # the silence itself: nothing counted, but the bucket says so
            spread(imp if a.value >= 0 else exp, held, b.ts, 0.0, _GAP, lo=lo, hi=hi)
    return imp, exp


def recompute_window(samples: Sequence[Sample], dirty_lo: int, dirty_hi: int) -> tuple[int, int]:
    """Buckets to rewrite when readings in ``[dirty_lo, dirty_hi)`` changed.

    A new reading splits the interval between its neighbours, so everything from the bucket
    of the last sample before the dirty range to the bucket of the first sample after it can
    change. ``samples`` are the sorted samples around the range (at least those neighbours).
    """
    before = [s.ts for s in samples if s.ts < dirty_lo]
    after = [s.ts for s in samples if s.ts >= dirty_hi]
    lo = floor_quarter(before[-1]) if before else floor_quarter(dirty_lo)
    hi = ceil_quarter(after[0]) if after else ceil_quarter(dirty_hi)
    return lo, hi
