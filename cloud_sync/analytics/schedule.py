"""A daily on/off window in local time: when it next switches and what it wants now. Pure.

An accepted recommendation runs a device from ``on_at`` to ``off_at`` every day (a window
past midnight wraps). The scheduler wakes at each switch time; whatever the delay (a replica
was down), it sends the state the window wants *now*, so a missed switch is made up once and a
stale one is never replayed.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from cloud_sync.analytics import calendar


def _minutes(hhmm: str) -> int:
    hours, minutes = hhmm.split(":")
    return int(hours) * 60 + int(minutes)


def _at(day: datetime, hhmm: str, tz: ZoneInfo) -> int:
    minutes = _minutes(hhmm) % (24 * 60)
    moment = datetime(day.year, day.month, day.day, minutes // 60, minutes % 60, tzinfo=tz)
    return calendar.to_ms(moment)


def next_switch(on_at: str, off_at: str, after_ms: int, tz: ZoneInfo) -> int:
    """The first switch time (on or off) strictly after ``after_ms``."""
    today = calendar.local(after_ms, tz)
    candidates = [_at(today + timedelta(days=d), hhmm, tz)
                  for d in (-1, 0, 1, 2) for hhmm in (on_at, off_at)]
    return min(ts for ts in candidates if ts > after_ms)


def wants_on(on_at: str, off_at: str, ts_ms: int, tz: ZoneInfo) -> bool:
    """Whether the window is open at ``ts_ms``."""
    moment = calendar.local(ts_ms, tz)
    now = moment.hour * 60 + moment.minute
    lo, hi = _minutes(on_at) % 1440, _minutes(off_at) % 1440
    return lo <= now < hi if lo < hi else (now >= lo or now < hi)
