"""Staged rollout maths, AWS IoT Jobs style: an exponential notification rate and abort
criteria. Pure functions over counts and times; the cloud's scheduler calls them.

Rate (``jobExecutionsRolloutConfig.exponentialRate``): start at ``base_per_minute``; each time
``notified_step`` more gateways were notified (or ``succeeded_step`` more succeeded) the rate
is multiplied by ``increment_factor``, up to ``maximum_per_minute``. A token bucket turns the
rate into "how many may be notified now": it refills at the rate, holds at most one minute's
worth, and starts full, so the first minute notifies ``base_per_minute`` at once.

Abort (``abortConfig.criteriaList``): once at least ``min_executed`` executions finished, if the
share of finished ones that ended in ``failure_type`` (FAILED, REJECTED, TIMED_OUT, or ALL of
them) reaches ``threshold_pct``, the rollout is aborted: no more gateways are notified and
queued executions are canceled.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

__all__ = ["AbortCriterion", "RateConfig", "RateState", "abort_verdict", "current_rate",
           "notify_budget", "select_percentage"]

FailureType = Literal["FAILED", "REJECTED", "TIMED_OUT", "ALL"]
FINISHED = ("SUCCEEDED", "FAILED", "REJECTED", "TIMED_OUT")
FAILURES: dict[str, tuple[str, ...]] = {
    "FAILED": ("FAILED",), "REJECTED": ("REJECTED",), "TIMED_OUT": ("TIMED_OUT",),
    "ALL": ("FAILED", "REJECTED", "TIMED_OUT"),
}


@dataclass(frozen=True)
class RateConfig:
    base_per_minute: int
    increment_factor: float = 1.0
    notified_step: int | None = None
    succeeded_step: int | None = None
    maximum_per_minute: int = 1000

    def __post_init__(self) -> None:
        if not 1 <= self.base_per_minute <= self.maximum_per_minute:
            raise ValueError("base_per_minute must be 1..maximum_per_minute")
        if not 1.0 <= self.increment_factor <= 5.0:
            raise ValueError("increment_factor must be 1.0..5.0")
        if self.notified_step is not None and self.succeeded_step is not None:
            raise ValueError("use notified_step or succeeded_step, not both")


@dataclass(frozen=True)
class RateState:
    tokens: float
    at_ms: int


@dataclass(frozen=True)
class AbortCriterion:
    failure_type: FailureType
    threshold_pct: float
    min_executed: int

    def __post_init__(self) -> None:
        if not 0 < self.threshold_pct <= 100 or self.min_executed < 1:
            raise ValueError("threshold_pct must be in (0, 100] and min_executed >= 1")


def current_rate(config: RateConfig, notified: int, succeeded: int) -> float:
    """Notifications per minute after ``notified`` / ``succeeded`` gateways."""
    if config.notified_step:
        steps = notified // config.notified_step
    elif config.succeeded_step:
        steps = succeeded // config.succeeded_step
    else:
        steps = 0
    rate = config.base_per_minute * config.increment_factor ** min(steps, 200)
    return float(min(config.maximum_per_minute, rate))


def notify_budget(config: RateConfig, state: RateState | None, now_ms: int, notified: int,
                  succeeded: int) -> tuple[int, RateState]:
    """How many gateways may be notified at ``now_ms``, and the bucket after taking them."""
    rate = current_rate(config, notified, succeeded)
    if state is None:
        tokens = rate  # a full first minute
    else:
        elapsed_min = max(0, now_ms - state.at_ms) / 60_000
        tokens = min(rate, state.tokens + rate * elapsed_min)
    allowed = math.floor(tokens + 1e-9)
    return allowed, RateState(tokens - allowed, now_ms)


def abort_verdict(criteria: Sequence[AbortCriterion], counts: Mapping[str, int]) -> str | None:
    """The reason to abort (naming the numbers), or ``None`` to go on."""
    finished = sum(counts.get(s, 0) for s in FINISHED)
    for rule in criteria:
        if finished < rule.min_executed:
            continue
        failed = sum(counts.get(s, 0) for s in FAILURES[rule.failure_type])
        pct = 100.0 * failed / finished
        if pct >= rule.threshold_pct:
            return (f"{failed} of {finished} finished executions ended {rule.failure_type} "
                    f"({pct:.1f}% >= {rule.threshold_pct:g}%, at least {rule.min_executed} "
                    "finished)")
    return None


def select_percentage(gateways: Sequence[str], percentage: float, seed: str) -> list[str]:
    """A stable pseudo-random ``percentage`` of ``gateways``, in notification order: the same
    seed (the rollout id) always picks and orders the same gateways."""
    if not 0 < percentage <= 100:
        raise ValueError("percentage must be in (0, 100]")
    ranked = sorted(gateways, key=lambda g: hashlib.sha256(f"{seed}:{g}".encode()).digest())
    return ranked[: math.ceil(len(ranked) * percentage / 100)]
