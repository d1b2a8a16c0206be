"""The gateway status message (retained on ``hw/{gw}/status``) built from buffer and meter state.

Pure: the runtime passes the buffer's stats, the meters' health and the wall clock. The same
model, with ``state="offline"``, is the MQTT last will, so a subscriber always finds one
retained ``GatewayStatus`` telling whether the gateway is up and how far behind it is.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from protocols.models import GatewayStatus, MeterHealth


class BufferStatsView(Protocol):
    """What the status needs from ``edge_agent.buffer.BufferStats``."""

    @property
    def depth(self) -> int: ...

    @property
    def oldest_ts_ms(self) -> int | None: ...

    @property
    def dropped_total(self) -> int:
        """Every reading lost unconfirmed: thinned, dropped when full, lost in recovery."""
        ...


def online_status(
    gateway_id: str,
    stats: BufferStatsView,
    meters: Mapping[str, MeterHealth],
    now_ms: int,
) -> GatewayStatus:
    """Status of a running gateway.

    ``oldest_unsent_age_s`` is None when the buffer is empty and never negative (a reading
    stamped ahead of a clock that NTP then set back counts as age 0). ``dropped_readings``
    counts every reading the cloud will never get (the buffer's ``dropped_total``, which
    includes readings thinned away when full).
    """
    age: float | None = None
    if stats.depth > 0 and stats.oldest_ts_ms is not None:
        age = max(0.0, (now_ms - stats.oldest_ts_ms) / 1000.0)
    return GatewayStatus(
        gateway_id=gateway_id,
        state="online",
        ts=now_ms,
        buffer_depth=stats.depth,
        oldest_unsent_age_s=age,
        dropped_readings=stats.dropped_total,
        meters=dict(meters),
    )


def offline_status(gateway_id: str, now_ms: int) -> GatewayStatus:
    """The last will (and the status a clean shutdown publishes): ``state="offline"``."""
    return GatewayStatus(gateway_id=gateway_id, state="offline", ts=now_ms)
