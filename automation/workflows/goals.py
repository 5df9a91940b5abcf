"""A workflow's goal (settings.goal): a contact who meets it leaves at once, from wherever
they are, counted as converted. Checked when a batch is claimed, and when events arrive
or contacts change (automation/reactions.py), so nobody waits for the next tick. Machine
hits (``machine: true``) never meet an event goal: reactions leave them out of the events
passed in, and the events table is read without them."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from automation.contacts.activity import human_events
from automation.contacts.models import Event
from automation.db import one_of
from automation.workflows import conditions
from automation.workflows.graph import Graph


@dataclass(frozen=True)
class Open:
    """An open enrolment a goal is checked for."""

    enrollment_id: int
    contact_id: int
    enrolled_at: datetime
    context: dict[str, Any]


@dataclass(frozen=True)
class SeenEvent:
    contact_id: int
    name: str
    properties: dict[str, Any]
    occurred_at: datetime


def goal_conversions(
    session: Session,
    graph: Graph,
    enrolments: Sequence[Open],
    now: datetime,
    *,
    events: Sequence[SeenEvent] | None = None,
    check_condition: bool = True,
) -> set[int]:
    """Enrolment ids that meet ``graph``'s goal. With ``events`` given, only those events
    are checked for an event goal (ingestion); otherwise the events table is."""
    goal = graph.settings.goal
    if goal is None or not enrolments:
        return set()
    met: set[int] = set()
    if goal.condition is not None and check_condition:
        met |= conditions.matching_contacts(
            session,
            goal.condition,
            [conditions.Member(e.enrollment_id, e.contact_id, e.context) for e in enrolments],
            now,
        )
    if goal.event is not None:
        rest = [e for e in enrolments if e.enrollment_id not in met]
        if rest:
            met |= _event_goal(session, goal.event, goal.event_where, rest, events)
    return met


def _event_goal(
    session: Session,
    name: str,
    where: list[dict[str, Any]],
    enrolments: Sequence[Open],
    events: Sequence[SeenEvent] | None,
) -> set[int]:
    by_contact: dict[int, list[Open]] = defaultdict(list)
    for e in enrolments:
        by_contact[e.contact_id].append(e)
    if events is None:
        earliest = min(e.enrolled_at for e in enrolments)
        rows = session.execute(
            select(Event.contact_id, Event.name, Event.properties, Event.occurred_at).where(
                Event.name == name,
                one_of(session, Event.contact_id, list(by_contact)),
                Event.occurred_at >= earliest,
                human_events(session),
            )
        )
        events = [SeenEvent(r.contact_id, r.name, r.properties, r.occurred_at) for r in rows]
    met: set[int] = set()
    for event in events:
        if event.name != name or event.contact_id not in by_contact:
            continue
        for enrolment in by_contact[event.contact_id]:
            if event.occurred_at >= enrolment.enrolled_at and conditions.event_matches(
                where, event.properties
            ):
                met.add(enrolment.enrollment_id)
    return met
