"""Rollout maths: the exponential rate, the token bucket's time base, abort criteria."""

from __future__ import annotations

import pytest

from firmware_update.rollout import (
    AbortCriterion,
    RateConfig,
    abort_verdict,
    current_rate,
    notify_budget,
    select_percentage,
)

MIN = 60_000


def test_rate_grows_by_the_factor_per_step_up_to_the_maximum() -> None:
    cfg = RateConfig(base_per_minute=5, increment_factor=2, notified_step=10,
                     maximum_per_minute=30)
    assert [current_rate(cfg, n, 0) for n in (0, 9, 10, 20, 30, 1000)] == \
        [5, 5, 10, 20, 30, 30]
    by_success = RateConfig(base_per_minute=2, increment_factor=1.5, succeeded_step=4)
    assert current_rate(by_success, 100, 3) == 2 and current_rate(by_success, 0, 8) == 4.5


def test_bucket_starts_full_then_refills_at_the_rate() -> None:
    cfg = RateConfig(base_per_minute=6)
    n, state = notify_budget(cfg, None, 0, 0, 0)
    assert n == 6
    n, state = notify_budget(cfg, state, 10_000, 6, 0)  # 10 s at 6/min: one more
    assert n == 1
    n, state = notify_budget(cfg, state, 10_000 + 5_000, 7, 0)
    assert n == 0
    n, state = notify_budget(cfg, state, 10 * MIN, 7, 0)  # never more than a minute's worth
    assert n == 6


def test_abort_waits_for_the_minimum_then_trips_at_the_threshold() -> None:
    rules = [AbortCriterion("FAILED", 20, 10)]
    assert abort_verdict(rules, {"SUCCEEDED": 5, "FAILED": 4}) is None  # 9 finished
    assert abort_verdict(rules, {"SUCCEEDED": 9, "FAILED": 1, "IN_PROGRESS": 30}) is None
    reason = abort_verdict(rules, {"SUCCEEDED": 8, "FAILED": 2})
    assert reason is not None and "2 of 10" in reason and "20.0%" in reason
    assert abort_verdict([AbortCriterion("ALL", 30, 3)],
                         {"SUCCEEDED": 2, "REJECTED": 1}) is not None
    assert abort_verdict([AbortCriterion("TIMED_OUT", 50, 2)],
                         {"SUCCEEDED": 2, "FAILED": 2}) is None


def test_percentage_selection_is_stable_and_sized() -> None:
    gateways = [f"gw-{i}" for i in range(200)]
    picked = select_percentage(gateways, 10, "rollout-1")
    assert len(picked) == 20 and picked == select_percentage(list(reversed(gateways)), 10,
                                                             "rollout-1")
    assert picked != select_percentage(gateways, 10, "rollout-2")
    assert len(select_percentage(gateways, 0.1, "r")) == 1


@pytest.mark.parametrize("kwargs", [{"base_per_minute": 0}, {"base_per_minute": 5,
                                     "increment_factor": 9},
                                    {"base_per_minute": 5, "notified_step": 1,
                                     "succeeded_step": 1}])
def test_invalid_rate_configs(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RateConfig(**kwargs)  # type: ignore[arg-type]
