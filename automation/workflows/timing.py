"""Times in the contact's zone (docs/architecture.md, principle 10): waits until a local time,
date triggers, send windows and quiet hours. Everything returns aware UTC datetimes.

Wall-clock arithmetic is done on aware datetimes in the contact's zone, so "09:00 local"
stays 09:00 across a daylight-saving change. A local time that does not exist (02:30 on
the spring-forward night) moves forward by the gap (03:30); an ambiguous one (01:30 on the
fall-back night) is its first occurrence.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from automation.workflows.schema import WEEKDAYS, Duration, SendWindow, TimeWindow

UNKNOWN_ZONES = ("", "UTC")


@lru_cache(maxsize=1024)
def _zone(name: str) -> ZoneInfo | None:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def contact_zone(name: str | None, fallback: str) -> ZoneInfo:
    """The contact's zone, or the workflow's fallback when it is not known. ``UTC`` is the
    default every contact gets without one, so it counts as not known."""
    zone = _zone(name) if name and name not in UNKNOWN_ZONES else None
    return zone or _zone(fallback) or ZoneInfo("UTC")


def local_instant(day: date, at: time, zone: ZoneInfo) -> datetime:
    """``at`` on ``day`` in ``zone`` as UTC (fold=0: see the module doc for gaps/overlaps)."""
    return datetime.combine(day, at, tzinfo=zone).astimezone(UTC)


def after_duration(start: datetime, duration: Duration, zone: ZoneInfo) -> datetime:
    """``start`` plus calendar days in ``zone``, then elapsed hours and minutes."""
    moved = start
    if duration.days:
        local = start.astimezone(zone)
        shifted = local.date() + timedelta(days=duration.days)
        moved = local_instant(shifted, local.timetz().replace(tzinfo=None), zone)
    return (moved + duration.elapsed).astimezone(UTC)


def next_time_of_day(
    now: datetime, zone: ZoneInfo, at: time, weekdays: Sequence[str] = WEEKDAYS
) -> datetime:
    """The first instant at or after ``now`` when it is ``at`` locally on an allowed day."""
    today = now.astimezone(zone).date()
    for offset in range(0, 9):
        day = today + timedelta(days=offset)
        if WEEKDAYS[day.weekday()] not in weekdays:
            continue
        candidate = local_instant(day, at, zone)
        if candidate >= now:
            return candidate
    raise ValueError("no allowed weekday")  # unreachable: weekdays is never empty


def parse_date(value: object) -> date | None:
    if not isinstance(value, str):
        return None
    try:
        return date.fromisoformat(value[:10])
    except ValueError:
        return None


def date_target(value: object, offset_days: int, at: time, zone: ZoneInfo) -> datetime | None:
    """``offset_days`` from the date in ``value`` at local ``at``; None without a date."""
    day = parse_date(value)
    if day is None:
        return None
    return local_instant(day + timedelta(days=offset_days), at, zone)


def anniversary_in(day_of: date, year: int) -> date:
    """The anniversary of ``day_of`` in ``year``; 29 February falls on the 28th otherwise."""
    try:
        return day_of.replace(year=year)
    except ValueError:
        return date(year, 2, 28)


def _in_window(at: time, window: TimeWindow) -> bool:
    if window.start < window.end:
        return window.start <= at < window.end
    return at >= window.start or at < window.end


def _in_send_window(local: datetime, window: SendWindow) -> bool:
    at = local.time()
    if window.start < window.end:
        return WEEKDAYS[local.weekday()] in window.weekdays and window.start <= at < window.end
    if at >= window.start:
        return WEEKDAYS[local.weekday()] in window.weekdays
    if at < window.end:  # the tail of a window that opened yesterday
        return WEEKDAYS[(local.weekday() - 1) % 7] in window.weekdays
    return False


def next_send_time(
    now: datetime, zone: ZoneInfo, quiet: TimeWindow | None, window: SendWindow | None
) -> datetime:
    """``now`` if an email may go out now in the contact's zone, else when it may."""
    moment = now
    for _ in range(32):
        local = moment.astimezone(zone)
        if quiet is not None and _in_window(local.time().replace(tzinfo=None), quiet):
            moment = next_time_of_day(moment, zone, quiet.end)
            continue
        if window is not None and not _in_send_window(local, window):
            moment = next_time_of_day(moment, zone, window.start, window.weekdays)
            continue
        return moment
    return moment  # windows that never open together (quiet hours cover the window)
