"""Hours, days and months in a home's IANA time zone, as UTC epoch-ms ranges. Pure.

Local hours and days are unions of 15-minute UTC buckets in every real zone, so rollups
aggregate 15-minute rows into them exactly. On the day clocks go back (Europe/Berlin's last
Sunday of October) the day has 25 hours and the hour 02:00 occurs twice; each is its own
bucket, told apart by its UTC start. On the day clocks go forward the day has 23 hours.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cloud_sync.analytics.rollup import HOUR_MS, QUARTER_MS
from cloud_sync.errors import CloudSyncError


class UnknownZone(CloudSyncError):
    """Not an IANA time zone name; the message says what to use."""


def zone(name: str) -> ZoneInfo:
    """The zone called ``name`` (e.g. ``Europe/Berlin``); raises :class:`UnknownZone`."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise UnknownZone(f"timezone: {name!r} is not an IANA zone name "
                          "(use e.g. Europe/Berlin or UTC)") from exc


def local(ts_ms: int, tz: ZoneInfo) -> datetime:
    return datetime.fromtimestamp(ts_ms / 1000, tz)


def to_ms(moment: datetime) -> int:
    return round(moment.timestamp() * 1000)


_DAY_MS = 86_400_000
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()


@lru_cache(maxsize=262_144)
def _offset_ms(tz: ZoneInfo, quarter: int) -> int:
    """UTC offset during one 15-minute UTC bucket (zones change offset on that grid)."""
    offset = local(quarter * QUARTER_MS, tz).utcoffset()
    return round(offset.total_seconds() * 1000) if offset is not None else 0


def hour_start(ts_ms: int, tz: ZoneInfo) -> int:
    """UTC start of the local hour holding ``ts_ms`` (the repeated 02:00 keeps its fold)."""
    wall = ts_ms + _offset_ms(tz, ts_ms // QUARTER_MS)
    start = wall - wall % HOUR_MS - (wall - ts_ms)
    # Whole-hour DST steps fall on local hour edges, so the offset is the same all hour;
    # a zone whose step is not (Lord Howe's 30 minutes) takes the exact path.
    if ts_ms - HOUR_MS < start <= ts_ms and _offset_ms(tz, start // QUARTER_MS) == wall - ts_ms:
        return start
    return _hour_start_exact(ts_ms, tz)


def _hour_start_exact(ts_ms: int, tz: ZoneInfo) -> int:
    moment = local(ts_ms, tz)
    start = to_ms(moment.replace(minute=0, second=0, microsecond=0))
    # A zone whose DST step is not a whole hour can put the floored time on the other side
    # of the step; fall back to the 15-minute bucket, which is always right.
    return start if start <= ts_ms else ts_ms - ts_ms % QUARTER_MS


def day_of(ts_ms: int, tz: ZoneInfo) -> date:
    wall = ts_ms + _offset_ms(tz, ts_ms // QUARTER_MS)
    return date.fromordinal(_EPOCH_ORDINAL + wall // _DAY_MS)


def day_start(day: date, tz: ZoneInfo) -> int:
    """UTC ms of the first instant of ``day`` (a day whose midnight is skipped starts later)."""
    naive = datetime(day.year, day.month, day.day)
    moment = naive.replace(tzinfo=tz)
    # Midnight skipped by a DST jump: zoneinfo resolves fold=0 to the instant before the
    # jump, which displays as the previous day; move to the first real instant of the day.
    if local(to_ms(moment), tz).date() != day:
        moment = moment.replace(fold=1)
    return to_ms(moment)


def day_bounds(day: date, tz: ZoneInfo) -> tuple[int, int]:
    return day_start(day, tz), day_start(day + timedelta(days=1), tz)


def month_of(ts_ms: int, tz: ZoneInfo) -> str:
    return local(ts_ms, tz).strftime("%Y-%m")


def month_bounds(month: str, tz: ZoneInfo) -> tuple[int, int]:
    """``YYYY-MM`` -> its UTC range."""
    first = date.fromisoformat(f"{month}-01")
    following = date(first.year + first.month // 12, first.month % 12 + 1, 1)
    return day_start(first, tz), day_start(following, tz)


def days_between(lo_ms: int, hi_ms: int, tz: ZoneInfo) -> Iterator[date]:
    """Local days overlapping ``[lo_ms, hi_ms)``."""
    if hi_ms <= lo_ms:
        return
    day, last = day_of(lo_ms, tz), day_of(hi_ms - 1, tz)
    while day <= last:
        yield day
        day += timedelta(days=1)


def hours_between(lo_ms: int, hi_ms: int, tz: ZoneInfo) -> list[int]:
    """UTC starts of the local hours overlapping ``[lo_ms, hi_ms)``, in order."""
    starts: list[int] = []
    ts = lo_ms - lo_ms % QUARTER_MS
    while ts < hi_ms:
        start = hour_start(ts, tz)
        if not starts or starts[-1] != start:
            starts.append(start)
        ts += QUARTER_MS
    return starts


def iso_utc(ts_ms: int) -> str:
    return datetime.fromtimestamp(ts_ms / 1000, UTC).isoformat().replace("+00:00", "Z")


def iso_local(ts_ms: int, tz: ZoneInfo) -> str:
    return local(ts_ms, tz).isoformat()
