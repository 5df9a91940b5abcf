"""What happened, for people to read: daily counts for the dashboard's charts, recent
contacts and events, one contact's timeline and consent history."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import func, select, type_coerce
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Session

from automation import clock
from automation.contacts.models import ConsentRecord, Contact, ContactStatus, Event
from automation.db import is_postgres, quarter_hour, quarter_start

# The engagement events the tracking worker writes; ``machine: true`` marks a hit from a
# mail scanner or privacy proxy rather than a person.
ENGAGEMENT_EVENTS = ("email.sent", "email.opened", "email.clicked", "email.unsubscribed")


@dataclass(frozen=True)
class DailySeries:
    """Counts per day of the account time zone, oldest first; every day of the range is
    present, zeros included."""

    days: list[date]
    series: dict[str, list[int]]

    def total(self, name: str) -> int:
        return sum(self.series.get(name, []))

    @property
    def empty(self) -> bool:
        return not any(any(values) for values in self.series.values())

    def as_json(self) -> dict[str, Any]:
        """Days as ISO strings; series as a list, so their order survives JSON."""
        return {
            "days": [d.isoformat() for d in self.days],
            "series": [{"name": name, "values": values} for name, values in self.series.items()],
        }


UTC_ZONE = ZoneInfo("UTC")


def local_day_counts(
    session: Session,
    column: Any,
    where: Sequence[Any],
    *,
    days: int,
    zone: ZoneInfo = UTC_ZONE,
    today: date | None = None,
    key: Any = None,
) -> tuple[list[date], dict[Any, list[int]]]:
    """Rows per day of ``zone`` over the last ``days`` days (today included), by ``column``
    (a timestamp), one series per value of ``key`` (or one, keyed None). The one way
    pages and charts count per day: the account time zone's midnights."""
    day_list, since = day_range(days, zone, today)
    quarter = quarter_hour(session, column)
    keys = [key] if key is not None else []
    query = (
        select(*keys, quarter, func.count()).where(*where, column >= since).group_by(*keys, quarter)
    )
    index = {d: i for i, d in enumerate(day_list)}
    series: dict[Any, list[int]] = {}
    for row in session.execute(query):
        name, bucket, count = (
            (row[0], row[1], row[2]) if key is not None else (None, row[0], row[1])
        )
        local = quarter_start(bucket).astimezone(zone)
        position = index.get(local.date())
        if position is not None:
            series.setdefault(name, [0] * len(day_list))[position] += count
    return day_list, series


def human_events(session: Session) -> Any:
    """A WHERE clause on ``Event``: not flagged ``machine: true`` (a missing or non-boolean
    flag counts as human). ``automation.reactions.is_machine`` is the same rule for one
    event's properties."""
    if is_postgres(session):
        return ~type_coerce(Event.properties, JSONB).contains({"machine": True})
    return func.coalesce(func.json_type(Event.properties, "$.machine"), "") != "true"


def day_range(
    days: int, zone: ZoneInfo = UTC_ZONE, today: date | None = None
) -> tuple[list[date], datetime]:
    """The last ``days`` days of ``zone`` (today included) and the UTC instant the first
    begins: the period every dashboard figure counts."""
    last = today or clock.now().astimezone(zone).date()
    first = last - timedelta(days=days - 1)
    since = datetime.combine(first, time.min, tzinfo=zone).astimezone(UTC)
    return [first + timedelta(days=i) for i in range(days)], since


def daily_event_counts(
    session: Session,
    names: Sequence[str],
    *,
    days: int = 30,
    zone: ZoneInfo = UTC_ZONE,
    today: date | None = None,
    humans_only: bool = True,
) -> DailySeries:
    """Events of each name per day of ``zone`` over the last ``days`` days (today included)."""
    where = [Event.name.in_(list(names))]
    if humans_only:
        where.append(human_events(session))
    day_list, counted = local_day_counts(
        session, Event.occurred_at, where, days=days, zone=zone, today=today, key=Event.name
    )
    return DailySeries(day_list, {n: counted.get(n, [0] * len(day_list)) for n in names})


def daily_new_contacts(
    session: Session, *, days: int = 30, zone: ZoneInfo = UTC_ZONE, today: date | None = None
) -> DailySeries:
    day_list, counted = local_day_counts(
        session, Contact.created_at, [], days=days, zone=zone, today=today
    )
    return DailySeries(day_list, {"contacts.created": counted.get(None, [0] * len(day_list))})


@dataclass(frozen=True)
class Overview:
    contacts: int
    subscribed: int
    new_contacts: int
    events: int
    by_status: dict[str, int]


def overview(session: Session, *, since: datetime) -> Overview:
    """Headline numbers: contacts by status, and what arrived since ``since``."""
    by_status = {
        str(status): count
        for status, count in session.execute(
            select(Contact.status, func.count()).group_by(Contact.status)
        )
    }
    return Overview(
        contacts=sum(by_status.values()),
        subscribed=by_status.get(ContactStatus.SUBSCRIBED.value, 0),
        new_contacts=session.scalar(
            select(func.count()).select_from(Contact).where(Contact.created_at >= since)
        )
        or 0,
        events=session.scalar(
            select(func.count()).select_from(Event).where(Event.occurred_at >= since)
        )
        or 0,
        by_status=by_status,
    )


def top_event_names(session: Session, *, since: datetime, limit: int = 8) -> list[tuple[str, int]]:
    rows = session.execute(
        select(Event.name, func.count())
        .where(Event.occurred_at >= since)
        .group_by(Event.name)
        .order_by(func.count().desc(), Event.name)
        .limit(limit)
    )
    return [(name, count) for name, count in rows]


def recent_contacts(session: Session, limit: int = 8) -> list[Contact]:
    return list(session.scalars(select(Contact).order_by(Contact.id.desc()).limit(limit)))


@dataclass(frozen=True)
class RecentEvent:
    id: int
    contact_id: int
    email: str
    name: str
    occurred_at: datetime
    source: str


def recent_events(session: Session, limit: int = 10) -> list[RecentEvent]:
    """The last events received (newest id first: the primary key index answers it, where
    ordering by ``occurred_at`` would sort the whole table)."""
    rows = session.execute(
        select(
            Event.id, Event.contact_id, Contact.email, Event.name, Event.occurred_at, Event.source
        )
        .join(Contact, Contact.id == Event.contact_id)
        .order_by(Event.id.desc())
        .limit(limit)
    )
    return [RecentEvent(*row) for row in rows]


@dataclass(frozen=True)
class TimelinePage:
    events: list[Event]
    page: int
    has_more: bool


def contact_timeline(
    session: Session, contact_id: int, *, page: int = 1, per_page: int = 50
) -> TimelinePage:
    """A contact's events, newest first, a page at a time."""
    page = max(page, 1)
    rows = list(
        session.scalars(
            select(Event)
            .where(Event.contact_id == contact_id)
            .order_by(Event.occurred_at.desc(), Event.id.desc())
            .limit(per_page + 1)
            .offset((page - 1) * per_page)
        )
    )
    return TimelinePage(rows[:per_page], page, len(rows) > per_page)


def consent_history(session: Session, contact_id: int) -> list[ConsentRecord]:
    """Every subscription status change of the contact, newest first."""
    return list(
        session.scalars(
            select(ConsentRecord)
            .where(ConsentRecord.contact_id == contact_id)
            .order_by(ConsentRecord.occurred_at.desc(), ConsentRecord.id.desc())
        )
    )
