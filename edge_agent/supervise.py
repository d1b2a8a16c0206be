"""Supervising the agent's workers: a failed worker is logged and restarted, never fatal."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from edge_agent.backoff import Backoff

__all__ = ["HEALTHY_RUN_S", "supervise"]

log = logging.getLogger(__name__)

# A worker that ran this long before failing starts its restart backoff afresh.
HEALTHY_RUN_S = 60.0


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
