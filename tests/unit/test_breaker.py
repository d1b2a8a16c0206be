"""The circuit breaker: opens after consecutive failures, one trial when half-open, and it
never makes one call wait for another (pybreaker's lock did, for the whole call)."""

from __future__ import annotations

import threading

import pytest

from cloud_sync.breaker import (
    STATE_CLOSED,
    STATE_HALF_OPEN,
    STATE_OPEN,
    CircuitBreaker,
    CircuitOpen,
)


class Down(Exception):
    pass


def fail() -> None:
    raise Down


def test_opens_after_fail_max_consecutive_failures_and_fails_fast_until_reset() -> None:
    clock = {"now": 0.0}
    breaker = CircuitBreaker(fail_max=3, reset_timeout=5.0, clock=lambda: clock["now"])
    for _ in range(2):
        with pytest.raises(Down):
            breaker.call(fail)
    assert breaker.call(lambda: 1) == 1  # a success resets the count
    for _ in range(3):
        with pytest.raises(Down):
            breaker.call(fail)
    assert breaker.current_state == STATE_OPEN
    called: list[int] = []
    with pytest.raises(CircuitOpen):
        breaker.call(lambda: called.append(1))
    assert called == []  # open: the call is not made at all
    clock["now"] = 5.0
    assert breaker.current_state == STATE_HALF_OPEN
    assert breaker.call(lambda: "ok") == "ok"
    assert breaker.current_state == STATE_CLOSED


def test_a_failed_trial_opens_it_again_for_a_full_timeout() -> None:
    clock = {"now": 0.0}
    breaker = CircuitBreaker(fail_max=1, reset_timeout=5.0, clock=lambda: clock["now"])
    with pytest.raises(Down):
        breaker.call(fail)
    clock["now"] = 6.0
    with pytest.raises(Down):
        breaker.call(fail)  # the trial
    clock["now"] = 10.0
    assert breaker.current_state == STATE_OPEN
    clock["now"] = 11.0
    assert breaker.current_state == STATE_HALF_OPEN


def test_half_open_lets_one_trial_through_and_the_rest_fail_fast() -> None:
    clock = {"now": 0.0}
    breaker = CircuitBreaker(fail_max=1, reset_timeout=1.0, clock=lambda: clock["now"])
    with pytest.raises(Down):
        breaker.call(fail)
    clock["now"] = 2.0
    inside, release = threading.Event(), threading.Event()

    def slow_trial() -> str:
        inside.set()
        release.wait(5)
        return "ok"
    trial = threading.Thread(target=breaker.call, args=(slow_trial,))
    trial.start()
    assert inside.wait(5)
    with pytest.raises(CircuitOpen):
        breaker.call(lambda: "second")
    release.set()
    trial.join(5)
    assert breaker.current_state == STATE_CLOSED


def test_exceptions_it_does_not_count_are_answers_not_outages() -> None:
    breaker = CircuitBreaker(fail_max=1, reset_timeout=60, counts=lambda e: isinstance(e, Down))
    for _ in range(3):
        with pytest.raises(KeyError):
            breaker.call(lambda: {}["missing"])
    assert breaker.current_state == STATE_CLOSED


def test_a_slow_call_never_makes_another_call_wait() -> None:
    breaker = CircuitBreaker()
    inside, release = threading.Event(), threading.Event()

    def slow() -> None:
        inside.set()
        release.wait(10)
    worker = threading.Thread(target=breaker.call, args=(slow,))
    worker.start()
    try:
        assert inside.wait(5)
        done = threading.Event()
        threading.Thread(target=lambda: (breaker.call(lambda: None), done.set())).start()
        assert done.wait(5), "a second call waited for the first to finish"
    finally:
        release.set()
        worker.join(5)
