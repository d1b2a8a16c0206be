"""The time range of an analytics request, in the home's zone. Pure.

``period`` names a range relative to now (``today``, ``yesterday``, ``month``, ``last_month``,
``last_7_days``, ``last_28_days``, ``year``); or ``from``/``to`` give one: a local date
(``2025-10-26``: that day's start), a date-time with an offset, or epoch milliseconds. ``to``
is exclusive. Errors name the parameter and say what to send.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from cloud_sync.analytics import calendar
from cloud_sync.errors import CloudSyncError

PERIODS = ("today", "yesterday", "month", "last_month", "last_7_days", "last_28_days", "year")
MAX_SPAN_DAYS = 400


class BadPeriod(CloudSyncError):
    """A bad ``period``/``from``/``to``; the message names it and the fix."""


def parse_instant(name: str, value: str, tz: ZoneInfo) -> int:
    text = value.strip()
    if text.lstrip("-").isdigit():
        return int(text)
    try:
        if len(text) == 10:
            return calendar.day_start(date.fromisoformat(text), tz)
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise BadPeriod(f"{name}: {value!r} is not a date (2025-10-26), a date-time with an "
                        "offset (2025-10-26T02:00:00+01:00) or epoch ms") from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=tz)
    return calendar.to_ms(moment)


def named(period: str, now_ms: int, tz: ZoneInfo) -> tuple[int, int]:
    today = calendar.day_of(now_ms, tz)
    month = calendar.month_of(now_ms, tz)
    if period == "today":
        return calendar.day_bounds(today, tz)
    if period == "yesterday":
        return calendar.day_bounds(today - timedelta(days=1), tz)
    if period == "month":
        return calendar.month_bounds(month, tz)
    if period == "last_month":
        first = date.fromisoformat(f"{month}-01") - timedelta(days=1)
        return calendar.month_bounds(first.strftime("%Y-%m"), tz)
    if period in ("last_7_days", "last_28_days"):
        days = 7 if period == "last_7_days" else 28
        end = calendar.day_start(today, tz)
        return calendar.day_start(today - timedelta(days=days), tz), end
    if period == "year":
        return (calendar.day_start(date(today.year, 1, 1), tz),
                calendar.day_start(date(today.year + 1, 1, 1), tz))
    raise BadPeriod(f"period: {period!r} is not one of {', '.join(PERIODS)}")


def resolve(period: str | None, from_: str | None, to: str | None, now_ms: int, tz: ZoneInfo,
            *, default: str = "today") -> tuple[int, int]:
    """``[lo, hi)`` in epoch ms; raises :class:`BadPeriod`."""
    if period is not None and (from_ is not None or to is not None):
        raise BadPeriod("period: give either period or from/to, not both")
    if from_ is None and to is None:
        return named(period or default, now_ms, tz)
    if from_ is None or to is None:
        raise BadPeriod(f"{'from' if from_ is None else 'to'}: give both from and to")
    lo, hi = parse_instant("from", from_, tz), parse_instant("to", to, tz)
    if hi <= lo:
        raise BadPeriod("to: must be after from")
    if hi - lo > MAX_SPAN_DAYS * 86_400_000:
        raise BadPeriod(f"to: at most {MAX_SPAN_DAYS} days per request (ask in parts)")
    return lo, hi
