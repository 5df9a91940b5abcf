"""Dashboard and timeline queries, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from automation import clock
from automation.contacts import activity
from automation.contacts.consent import change_status
from automation.contacts.events import ingest_events
from automation.contacts.models import ContactStatus
from automation.contacts.schema import ContactIn
from automation.contacts.service import create_contact

TODAY = date(2026, 3, 10)


def at(day: int, hour: int = 12) -> str:
    return datetime(2026, 3, day, hour, tzinfo=UTC).isoformat()


def event(name: str, day: int, **properties) -> dict:
    return {
        "name": name,
        "email": "ana@example.com",
        "occurred_at": at(day),
        "properties": properties,
    }


def test_daily_counts_fill_every_day_and_leave_machine_hits_out(session):
    ingest_events(
        session,
        [
            event("email.sent", 8),
            event("email.sent", 10),
            event("email.opened", 8, machine=False),
            event("email.opened", 8, machine=True),  # a mail scanner's prefetch
            event("email.opened", 9),  # no flag: a person
            event("email.opened", 9, machine="yes"),  # not a boolean: counted as a person
            event("email.clicked", 10, machine=True),
            event("email.sent", 1),  # before the range
            event("page_viewed", 9),  # not asked for
        ],
        source="test",
    )
    session.commit()
    counts = activity.daily_event_counts(session, activity.ENGAGEMENT_EVENTS, days=3, today=TODAY)
    assert counts.days == [date(2026, 3, 8), date(2026, 3, 9), date(2026, 3, 10)]
    assert counts.series == {
        "email.sent": [1, 0, 1],
        "email.opened": [1, 2, 0],
        "email.clicked": [0, 0, 0],
        "email.unsubscribed": [0, 0, 0],
    }
    assert counts.total("email.opened") == 3 and not counts.empty
    everyone = activity.daily_event_counts(
        session, ["email.opened"], days=3, today=TODAY, humans_only=False
    )
    assert everyone.series["email.opened"] == [2, 2, 0]
    as_json = counts.as_json()
    assert as_json["days"][0] == "2026-03-08"
    assert [s["name"] for s in as_json["series"]] == list(activity.ENGAGEMENT_EVENTS)


def test_daily_counts_with_no_events_are_empty_not_missing(session):
    counts = activity.daily_event_counts(session, ["email.sent"], days=7, today=TODAY)
    assert counts.empty and counts.series == {"email.sent": [0] * 7} and len(counts.days) == 7


def test_events_late_in_the_utc_day_count_for_that_day(session):
    ingest_events(
        session,
        [
            {"name": "email.sent", "email": "a@example.com", "occurred_at": at(9, 23)},
            {"name": "email.sent", "email": "a@example.com", "occurred_at": at(10, 0)},
        ],
        source="test",
    )
    counts = activity.daily_event_counts(session, ["email.sent"], days=2, today=TODAY)
    assert counts.series["email.sent"] == [1, 1]


def test_new_contacts_per_day_and_overview(session):
    clock.set_source(lambda: datetime(2026, 3, 9, 8, tzinfo=UTC))
    try:
        create_contact(session, ContactIn(email="a@example.com"), source="test")
        create_contact(
            session, ContactIn(email="b@example.com", status=ContactStatus.PENDING), source="test"
        )
    finally:
        clock.set_source(None)
    growth = activity.daily_new_contacts(session, days=2, today=TODAY)
    assert growth.series == {"contacts.created": [2, 0]}
    summary = activity.overview(session, since=datetime(2000, 1, 1, tzinfo=UTC))
    assert (summary.contacts, summary.subscribed, summary.new_contacts) == (2, 1, 2)
    assert summary.by_status == {"subscribed": 1, "pending": 1}


def test_timeline_pages_newest_first(session):
    ingest_events(session, [event("page_viewed", d) for d in range(1, 8)], source="test")
    contact_id = activity.recent_contacts(session)[0].id
    first = activity.contact_timeline(session, contact_id, per_page=3)
    assert [e.occurred_at.day for e in first.events] == [7, 6, 5] and first.has_more
    last = activity.contact_timeline(session, contact_id, page=3, per_page=3)
    assert [e.occurred_at.day for e in last.events] == [1] and not last.has_more
    recent = activity.recent_events(session, limit=2)
    assert [(e.email, e.occurred_at.day) for e in recent] == [("ana@example.com", 7)] * 1 + [
        ("ana@example.com", 6)
    ]


def test_consent_history_lists_every_status_change_newest_first(session):
    contact = create_contact(
        session, ContactIn(email="a@example.com", consent_text="form"), source="form"
    )
    clock.set_source(lambda: datetime.now(UTC) + timedelta(minutes=1))
    try:
        change_status(session, contact, ContactStatus.UNSUBSCRIBED, source="ui", ip="10.0.0.1")
    finally:
        clock.set_source(None)
    history = activity.consent_history(session, contact.id)
    assert [(r.status_from, r.status_to, r.source) for r in history] == [
        ("subscribed", "unsubscribed", "ui"),
        (None, "subscribed", "form"),
    ]


def test_top_event_names_in_the_period(session):
    now = clock.now()
    ingest_events(
        session,
        [
            {"name": n, "email": "a@example.com", "occurred_at": now.isoformat()}
            for n in ("b", "a", "a", "c")
        ]
        + [
            {
                "name": "old",
                "email": "a@example.com",
                "occurred_at": (now - timedelta(days=30)).isoformat(),
            }
        ],
        source="test",
    )
    since = now - timedelta(days=7)
    assert activity.top_event_names(session, since=since, limit=2) == [("a", 2), ("b", 1)]
