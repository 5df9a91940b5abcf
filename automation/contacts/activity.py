"""What happened, for people to read: daily counts for the dashboard's charts, recent
contacts and events, one contact's timeline and consent history."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import Date, cast, func, select, type_coerce
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Session

from automation import clock
from automation.contacts.models import ConsentRecord, Contact, ContactStatus, Event
from automation.db import is_postgres

# The engagement events the tracking worker writes; ``machine: true`` marks a hit from a
# mail scanner or privacy proxy rather than a person.
ENGAGEMENT_EVENTS = ("email.sent", "email.opened", "email.clicked", "email.unsubscribed")


@dataclass(frozen=True)
class DailySeries:
    """Counts per UTC day, oldest first; every day of the range is present, zeros included."""

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


def _day(session: Session, column: Any) -> Any:
    # Timestamps are stored as naive UTC, so the day is the UTC day on both databases.
    return cast(column, Date) if is_postgres(session) else func.date(column)


def _as_date(value: Any) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    return date.fromisoformat(str(value)[:10])


def human_events(session: Session) -> Any:
    """A WHERE clause on ``Event``: not flagged ``machine: true`` (a missing or non-boolean
    flag counts as human). ``automation.reactions.is_machine`` is the same rule for one
    event's properties."""
    if is_postgres(session):
        return ~type_coerce(Event.properties, JSONB).contains({"machine": True})
    return func.coalesce(func.json_type(Event.properties, "$.machine"), "") != "true"


def _range(days: int, today: date | None) -> tuple[list[date], datetime]:
    last = today or clock.now().date()
    first = last - timedelta(days=days - 1)
    since = datetime.combine(first, time.min, tzinfo=UTC)
    return [first + timedelta(days=i) for i in range(days)], since


def daily_event_counts(
    session: Session,
    names: Sequence[str],
    *,
    days: int = 30,
    today: date | None = None,
    humans_only: bool = True,
) -> DailySeries:
    """Events of each name per day over the last ``days`` days (today included)."""
    day_list, since = _range(days, today)
    day = _day(session, Event.occurred_at)
    query = (
        select(Event.name, day, func.count())
        .where(Event.name.in_(list(names)), Event.occurred_at >= since)
        .group_by(Event.name, day)
    )
    if humans_only:
        query = query.where(human_events(session))
    index = {d: i for i, d in enumerate(day_list)}
    series = {name: [0] * len(day_list) for name in names}
    for name, bucket, count in session.execute(query):
        position = index.get(_as_date(bucket))
        if position is not None:
            series[name][position] = count
    return DailySeries(day_list, series)


def daily_new_contacts(
    session: Session, *, days: int = 30, today: date | None = None
) -> DailySeries:
    day_list, since = _range(days, today)
    day = _day(session, Contact.created_at)
    rows = session.execute(
        select(day, func.count()).where(Contact.created_at >= since).group_by(day)
    )
    index = {d: i for i, d in enumerate(day_list)}
    counts = [0] * len(day_list)
    for bucket, count in rows:
        position = index.get(_as_date(bucket))
        if position is not None:
            counts[position] = count
    return DailySeries(day_list, {"contacts.created": counts})


@dataclass(frozen=True)
class Overview:
    contacts: int
    subscribed: int
    new_contacts: int
    events: int
    by_status: dict[str, int]


def overview(session: Session, *, days: int = 7) -> Overview:
    """Headline numbers: contacts by status, and what arrived in the last ``days`` days."""
    since = clock.now() - timedelta(days=days)
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


def top_event_names(session: Session, *, days: int = 7, limit: int = 8) -> list[tuple[str, int]]:
    since = clock.now() - timedelta(days=days)
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
