"""Pure decisions of the telemetry buffer: the disk-budget policy and seq-range arithmetic.

Policy when the buffer's used size passes ``max_bytes`` (declared, and the same every time):

1. **Thin** the oldest quarter of the stored readings (by seq, which is robust to wall-clock
   jumps on a gateway without an RTC): in each ``thin_to_minutes`` bucket of each stream
   (meter + channel + unit) keep one reading, the LAST one that has a value (so energy counters
   stay exact at bucket ends), and remove the rest.
2. **Drop** the oldest readings until the used size is at most 90 % of ``max_bytes`` (the
   10 % headroom keeps the policy from running on every append).

Every removed reading is counted (``thinned_total``, ``dropped_total``), the counters persist in
the database, and the first policy action of an episode logs one WARNING. An episode ends when
the cloud confirms readings again.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from protocols.models import SeqRange

THIN_FRACTION = 0.25
TARGET_FRACTION = 0.9
# Drop a little more than the estimate: freed pages lag deleted rows slightly.
DROP_MARGIN = 1.05


def target_bytes(max_bytes: int) -> int:
    """The size the policy brings the buffer down to once it has passed ``max_bytes``."""
    return int(max_bytes * TARGET_FRACTION)


def thin_window(depth: int) -> int:
    """How many of the oldest readings one thinning pass considers."""
    return max(1, math.ceil(depth * THIN_FRACTION)) if depth > 0 else 0


def rows_to_drop(used_bytes: int, target: int, depth: int) -> int:
    """Estimate how many of the oldest readings to drop to reach ``target`` bytes, from the
    average size of a stored reading; at least one while over target, at most ``depth``."""
    if used_bytes <= target or depth <= 0:
        return 0
    per_row = used_bytes / depth
    estimate = math.ceil((used_bytes - target) / per_row * DROP_MARGIN)
    return max(1, min(depth, estimate))


def merge_ranges(ranges: Iterable[SeqRange]) -> list[tuple[int, int]]:
    """Sort and merge overlapping or adjacent inclusive ranges."""
    merged: list[tuple[int, int]] = []
    for first, last in sorted((r.first, r.last) for r in ranges):
        if merged and first <= merged[-1][1] + 1:
            if last > merged[-1][1]:
                merged[-1] = (merged[-1][0], last)
        else:
            merged.append((first, last))
    return merged


@dataclass
class BudgetEpisode:
    """Tracks one 'buffer full' episode so it is logged once, not on every append."""

    active: bool = False
    thinned: int = 0
    dropped: int = 0

    def record(self, thinned: int, dropped: int) -> bool:
        """Count a policy action; True when it starts a new episode (log a warning)."""
        started = not self.active and (thinned + dropped) > 0
        if thinned + dropped > 0:
            self.active = True
            self.thinned += thinned
            self.dropped += dropped
        return started

    def end(self) -> tuple[int, int] | None:
        """Close the episode (the cloud is confirming again); its totals, or None if idle."""
        if not self.active:
            return None
        totals = (self.thinned, self.dropped)
        self.active, self.thinned, self.dropped = False, 0, 0
        return totals
