"""Supervising the agent's workers: a failed worker is logged and restarted, never fatal; a
worker that swallowed its cancellation is cancelled again, so the agent's stop never hangs,
and a slow stop says where each task waits."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Collection
from typing import Any

from edge_agent.backoff import Backoff

__all__ = ["HEALTHY_RUN_S", "SLOW_STOP_S", "cancel_and_wait", "report_slow_stop", "supervise"]

log = logging.getLogger(__name__)

# A worker that ran this long before failing starts its restart backoff afresh.
HEALTHY_RUN_S = 60.0
# A stop still running after this long logs where each task waits (then systemd may kill it).
SLOW_STOP_S = 10.0


async def supervise(name: str, work: Callable[[], Awaitable[None]], backoff: Backoff) -> None:
    """Run ``work`` forever: when it fails (or returns), log and restart it after a backoff.

    Cancellation stops it. This is the one place that catches every exception: a failed worker
    must never take the agent down.
    """
    failures = 0
    loop = asyncio.get_running_loop()
    while True:
        started = loop.time()
        try:
            await work()
            log.error("%s stopped unexpectedly", name)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s failed", name)
        failures = 1 if loop.time() - started >= HEALTHY_RUN_S else failures + 1
        delay = backoff.delay(failures)
        log.warning("restarting %s in %.1fs (failure %d)", name, delay, failures)
        await asyncio.sleep(delay)


async def cancel_and_wait(tasks: Collection[asyncio.Task[Any]], *, nudge_s: float = 1.0) -> None:
    """Cancel ``tasks`` and wait until every one has ended.

    A task still running ``nudge_s`` after its cancel is cancelled again (and again): on Python
    3.11, ``asyncio.wait_for`` returns the result instead of raising when the awaited answer
    lands in the same loop turn as the cancel, and pymodbus awaits every answer that way. The
    worker then loops back to wait for work, and a plain cancel-and-gather waits forever.
    """
    pending = {task for task in tasks if not task.done()}
    for task in pending:
        task.cancel()
    while pending:
        _, pending = await asyncio.wait(pending, timeout=nudge_s)
        for task in pending:
            log.warning("%s ignored its cancellation; cancelling it again", task.get_name())
            task.cancel()
    for task in tasks:  # retrieved, so asyncio does not log them as never retrieved
        if not task.cancelled() and task.exception() is not None:
            log.debug("%s ended with %r", task.get_name(), task.exception())


async def report_slow_stop(after_s: float) -> None:
    """A stop that hangs is killed by systemd (``TimeoutStopSec``) with nothing said: log what
    is still running first, so the journal shows where it hangs."""
    await asyncio.sleep(after_s)
    me = asyncio.current_task()
    for task in asyncio.all_tasks():
        if task is not me:
            log.error("stop is taking over %.0fs; task %s is still at: %s", after_s,
                      task.get_name(), " <- ".join(_await_chain(task)))


def _await_chain(task: asyncio.Task[object]) -> list[str]:
    """Where a task waits, innermost last (``Task.get_stack`` shows only its outer frame)."""
    places: list[str] = []
    awaited: object = task.get_coro()
    while awaited is not None and len(places) < 50:
        frame = getattr(awaited, "cr_frame", None) or getattr(awaited, "gi_frame", None)
        if frame is None:
            places.append(repr(awaited))
            break
        places.append(f"{frame.f_code.co_qualname} ({frame.f_code.co_filename}:{frame.f_lineno})")
        awaited = getattr(awaited, "cr_await", None) or getattr(awaited, "gi_yieldfrom", None)
    return places
