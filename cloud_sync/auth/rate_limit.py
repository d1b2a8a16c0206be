"""Per-caller request limits: a sliding window of request times per key, with the clock injected.

One instance per process: with N replicas behind a load balancer a caller gets up to N times the
limit, which is what it protects against (one runaway client or script flooding a replica) and
needs no shared store. Memory is bounded: at most ``limit`` timestamps per active key, and keys
idle for a whole window are dropped when the table grows past ``max_keys``.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Callable


class SlidingWindowLimiter:
    def __init__(self, limit: int, window_s: float, clock: Callable[[], float],
                 *, max_keys: int = 100_000) -> None:
        if limit < 1 or window_s <= 0:
            raise ValueError("limit must be >= 1 and window_s > 0")
        self.limit = limit
        self.window_s = window_s
        self._clock = clock
        self._max_keys = max_keys
        self._hits: dict[str, deque[float]] = {}
        self._lock = threading.Lock()  # FastAPI runs sync handlers in a thread pool

    def hit(self, key: str) -> float | None:
        """Count one request of ``key``; ``None`` when allowed, else the seconds until the
        oldest request in the window leaves it (the ``Retry-After``)."""
        now = self._clock()
        with self._lock:
            hits = self._hits.get(key)
            if hits is None:
                if len(self._hits) >= self._max_keys:
                    self._evict_idle(now)
                hits = self._hits[key] = deque()
            while hits and hits[0] <= now - self.window_s:
                hits.popleft()
            if len(hits) >= self.limit:
                return max(0.0, hits[0] + self.window_s - now)
            hits.append(now)
            return None

    @property
    def tracked(self) -> int:
        """Callers currently held in memory (bounded by ``max_keys`` plus the active ones)."""
        with self._lock:
            return len(self._hits)

    def _evict_idle(self, now: float) -> None:
        idle = [k for k, h in self._hits.items() if not h or h[-1] <= now - self.window_s]
        for key in idle:
            del self._hits[key]


def retry_after_header(seconds: float) -> str:
    return str(max(1, math.ceil(seconds)))
