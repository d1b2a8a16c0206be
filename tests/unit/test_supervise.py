"""Supervised workers: a failure restarts the worker, a cancel stops it, and stopping never
hangs on a worker that swallowed its cancel (Python 3.11's ``asyncio.wait_for``, which pymodbus
awaits every answer with, returns the answer when it lands in the same loop turn as the
cancel)."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import pytest

from edge_agent.backoff import Backoff
from edge_agent.supervise import cancel_and_wait, report_slow_stop, supervise


async def test_a_failing_worker_is_restarted_and_a_cancel_stops_it(
        caplog: pytest.LogCaptureFixture) -> None:
    runs = 0

    async def work() -> None:
        nonlocal runs
        runs += 1
        if runs < 3:
            raise RuntimeError(f"failure {runs}")
        await asyncio.Event().wait()

    task = asyncio.create_task(supervise("worker", work, Backoff(0.001, 0.01)))
    async with asyncio.timeout(5):
        while runs < 3:
            await asyncio.sleep(0.001)
    await cancel_and_wait([task])
    assert task.cancelled() and runs == 3
    assert "worker failed" in caplog.text and "failure 2" in caplog.text


async def test_a_worker_that_swallowed_its_cancel_is_cancelled_again(
        caplog: pytest.LogCaptureFixture) -> None:
    queue: asyncio.Queue[int] = asyncio.Queue()

    async def worker() -> None:  # like CommandService.run when an answer beat the cancel
        while True:
            with contextlib.suppress(asyncio.CancelledError):  # as wait_for does when
                await asyncio.sleep(10)  # its future is done already
            await queue.get()

    task = asyncio.create_task(worker(), name="commands")
    await asyncio.sleep(0)
    async with asyncio.timeout(5):
        await cancel_and_wait([task], nudge_s=0.05)
    assert task.cancelled()
    assert "commands ignored its cancellation; cancelling it again" in caplog.text


async def test_cancel_and_wait_retrieves_the_errors_of_tasks_that_failed_first() -> None:
    async def fails() -> None:
        raise ValueError("boom")

    task = asyncio.create_task(fails())
    await asyncio.sleep(0)
    await cancel_and_wait([task])  # done already: nothing to cancel, its error retrieved
    assert isinstance(task.exception(), ValueError)


async def test_a_slow_stop_logs_where_each_task_still_waits(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR)

    async def inner() -> None:
        await asyncio.Event().wait()

    async def outer() -> None:
        await inner()

    task = asyncio.create_task(outer(), name="stuck")
    await asyncio.sleep(0)
    await report_slow_stop(0.01)
    (line,) = [r.getMessage() for r in caplog.records if "task stuck" in r.getMessage()]
    assert "is still at: " in line and ".outer (" in line and ".inner (" in line
    assert "Event.wait" in line
    await cancel_and_wait([task])
