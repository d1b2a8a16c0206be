"""A circuit breaker that never serialises the calls it guards.

pybreaker (used here before) holds one lock for the whole duration of every ``call``
(danielfm/pybreaker#55), so a single slow statement - an ingest transaction waiting up to its
statement timeout - made every other database call of the process wait behind it: API reads,
auth lookups, acks. That is the opposite of a bulkhead. Here the lock only guards the
bookkeeping; calls run concurrently.

States: *closed* (calls go through; ``fail_max`` consecutive failures open it), *open* (calls
fail fast with :class:`CircuitOpen` until ``reset_timeout`` has passed), *half-open* (one trial
call goes through, the others still fail fast; its success closes the breaker, its failure opens
it again). Only exceptions ``counts`` says are failures trip it (default: every exception); any
other exception counts as a success: the guarded service answered.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

STATE_CLOSED, STATE_HALF_OPEN, STATE_OPEN = "closed", "half-open", "open"


class CircuitOpen(Exception):
    """The breaker is open (or its half-open trial is in flight): the call was not made."""


class CircuitBreaker:
    def __init__(self, *, fail_max: int = 5, reset_timeout: float = 5.0, name: str = "breaker",
                 counts: Callable[[BaseException], bool] = lambda _exc: True,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if fail_max < 1 or reset_timeout <= 0:
            raise ValueError("fail_max must be >= 1 and reset_timeout > 0")
        self.fail_max = fail_max
        self.reset_timeout = reset_timeout
        self.name = name
        self._counts = counts
        self._clock = clock
        self._lock = threading.Lock()
        self._failures = 0
        self._opened_at: float | None = None
        self._trial_running = False

    @property
    def current_state(self) -> str:
        with self._lock:
            if self._opened_at is None:
                return STATE_CLOSED
            if self._clock() - self._opened_at >= self.reset_timeout:
                return STATE_HALF_OPEN
            return STATE_OPEN

    @property
    def fail_counter(self) -> int:
        return self._failures

    def call(self, func: Callable[[], T]) -> T:
        """Run ``func`` unless the breaker is open; its exceptions propagate unchanged.

        Raises :class:`CircuitOpen` without calling ``func`` when open.
        """
        trial = self._admit()
        try:
            result = func()
        except BaseException as exc:
            self._record_failure(exc, trial)
            raise
        self._record_success(trial)
        return result

    def _admit(self) -> bool:
        """Whether this call is the half-open trial; raises ``CircuitOpen`` when refused."""
        with self._lock:
            if self._opened_at is None:
                return False
            if self._clock() - self._opened_at < self.reset_timeout or self._trial_running:
                raise CircuitOpen(f"{self.name} circuit open: recent calls failed")
            self._trial_running = True
            return True

    def _record_failure(self, exc: BaseException, trial: bool) -> None:
        if not self._counts(exc):  # e.g. NotFound from inside a transaction: the DB answered
            self._record_success(trial)
            return
        with self._lock:
            if trial:
                self._trial_running = False
            self._failures += 1
            if trial or self._failures >= self.fail_max:
                self._opened_at = self._clock()

    def _record_success(self, trial: bool) -> None:
        with self._lock:
            if trial:
                self._trial_running = False
                self._opened_at = None
            if self._opened_at is None:
                self._failures = 0
