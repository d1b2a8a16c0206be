"""When to try a device again after it stopped answering, and what its health is.

Pure: time comes in as arguments (monotonic seconds), randomness through an injected function,
so tests drive every schedule exactly. The poller asks :meth:`DeviceState.due` before each poll
and reports the outcome with :meth:`DeviceState.succeeded` / :meth:`DeviceState.failed`.
"""

from __future__ import annotations

import random as _random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from protocols.models import MeterHealth

# After this many failed polls in a row a device is "offline"; before that "degraded".
OFFLINE_AFTER_FAILURES = 3

HealthState = Literal["ok", "degraded", "offline"]


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with jitter: ``initial_s * multiplier**(n-1)``, capped at ``max_s``.

    Jitter shortens each delay by up to ``jitter`` (a fraction), never lengthens it, so
    ``max_s`` is a hard bound on how long a recovered device waits before it is tried again.
    Spreading the retries keeps devices that failed together (a bus glitch) from all retrying
    in the same instant.
    """

    initial_s: float
    max_s: float
    multiplier: float = 2.0
    jitter: float = 0.2
    random: Callable[[], float] = field(default=_random.random, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.initial_s <= 0 or self.max_s < self.initial_s:
            raise ValueError("backoff needs 0 < initial_s <= max_s")
        if not 0 <= self.jitter < 1 or self.multiplier < 1:
            raise ValueError("backoff needs 0 <= jitter < 1 and multiplier >= 1")

    def delay(self, failures: int) -> float:
        """Seconds to wait after the ``failures``-th failure in a row (``failures >= 1``)."""
        if failures < 1:
            return 0.0
        # Cap the exponent so huge failure counts cannot overflow a float.
        raw = self.initial_s * self.multiplier ** min(failures - 1, 64)
        capped = min(raw, self.max_s)
        return capped * (1.0 - self.jitter * self.random())


@dataclass
class DeviceState:
    """Retry gate and health of one device (meter).

    ``due(now)`` is False while the device is backing off: the poller skips it without any bus
    traffic, so a dead device costs one timeout per backoff period, not one per interval.
    """

    backoff: Backoff
    consecutive_failures: int = 0
    last_success_ts: int | None = None  # wall clock, epoch ms (for the status report)
    last_error: str | None = None
    retry_at: float = 0.0  # monotonic seconds

    def due(self, now: float) -> bool:
        return now >= self.retry_at

    def succeeded(self, wall_ms: int) -> None:
        self.consecutive_failures = 0
        self.last_success_ts = wall_ms
        self.last_error = None
        self.retry_at = 0.0

    def failed(self, now: float, error: str) -> float:
        """Record a failed poll; return the monotonic time of the next attempt."""
        self.consecutive_failures += 1
        self.last_error = error
        self.retry_at = now + self.backoff.delay(self.consecutive_failures)
        return self.retry_at

    @property
    def state(self) -> HealthState:
        if self.consecutive_failures == 0:
            return "ok"
        if self.consecutive_failures < OFFLINE_AFTER_FAILURES:
            return "degraded"
        return "offline"

    def health(self) -> MeterHealth:
        return MeterHealth(
            state=self.state,
            last_success_ts=self.last_success_ts,
            consecutive_failures=self.consecutive_failures,
            last_error=self.last_error,
        )
