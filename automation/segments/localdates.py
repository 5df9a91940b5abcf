"""The local date ("today") in each contact's time zone, computed in Python once per query.

SQLite has no time zone database and PostgreSQL's may differ from Python's, so neither
evaluates zones itself: at any instant the zones fall into two or three groups by local
date, and the compiled SQL picks the group by ``contacts.time_zone``. The Python evaluator
uses the same groups, so both agree exactly. Unknown zone names count as UTC.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

from automation.addresses import known_time_zones

DEFAULT_ZONE = "UTC"


@lru_cache(maxsize=16)
def zones_by_local_date(now: datetime) -> tuple[tuple[date, tuple[str, ...]], ...]:
    """(local date, zones) at ``now``; the group holding UTC comes first and is the default."""
    groups: dict[date, list[str]] = {}
    for zone in sorted(known_time_zones()):
        groups.setdefault(now.astimezone(ZoneInfo(zone)).date(), []).append(zone)
    default = now.astimezone(UTC).date()
    ordered = [(default, tuple(groups.pop(default, [])))]
    ordered.extend((day, tuple(zones)) for day, zones in sorted(groups.items()))
    return tuple(ordered)


def local_today(zone: str | None, now: datetime) -> date:
    if zone not in known_time_zones():
        zone = DEFAULT_ZONE
    return now.astimezone(ZoneInfo(zone)).date()


def anniversaries(today: date) -> tuple[str, ...]:
    """The "-MM-DD" endings whose anniversary falls on ``today`` (29 February is
    celebrated on 28 February in other years)."""
    endings = [today.strftime("-%m-%d")]
    if today.month == 2 and today.day == 28 and (today + timedelta(days=1)).month == 3:
        endings.append("-02-29")
    return tuple(endings)
