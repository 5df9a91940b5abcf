"""What starts, wakes and ends enrolments outside the tick.

- New events (``on_events``, called from automation/reactions.py in the transaction that
  stored them): enrol contacts in workflows whose trigger the event matches, wake
  enrolments waiting for that event, convert those whose goal it meets.
- Changed contacts (``on_contact_changes``): field-changed triggers and goal conditions.
- A periodic scan (``scan_date_triggers``): date and anniversary triggers.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import Select, func, literal, or_, select, update
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session

from automation import clock
from automation.contacts.models import Contact
from automation.db import dialect_insert, is_postgres, one_of
from automation.reactions import IngestedEvent
from automation.workflows import conditions
from automation.workflows.engine import finish_enrollments
from automation.workflows.enrolment import Candidate, active_graphs, enroll_contacts, enroll_many
from automation.workflows.goals import Open, SeenEvent, goal_conversions
from automation.workflows.graph import Graph, graphs_for, load_graphs
from automation.workflows.models import (
    OPEN_STATUSES,
    ContactFieldSnapshot,
    Enrollment,
    EnrollmentStatus,
    Workflow,
    WorkflowStatus,
    WorkflowVersion,
)
from automation.workflows.schema import (
    AnniversaryTrigger,
    DateTrigger,
    EmailEngagementTrigger,
    EventTrigger,
    FieldChangedTrigger,
    FormTrigger,
    SegmentTrigger,
    WaitEventNode,
    trigger_event_name,
)
from automation.workflows.timing import (
    anniversary_in,
    contact_zone,
    date_target,
    local_instant,
    parse_date,
)

CHUNK = 5000
DATE_LOOKBACK = timedelta(days=2)


# --- events ------------------------------------------------------------------------------


def trigger_matcher(trigger: Any) -> Any:
    """A test of one event's properties for ``trigger`` (its event name already matched)."""
    if isinstance(trigger, EventTrigger):
        return conditions.event_matcher(trigger.where)
    if isinstance(trigger, FormTrigger):
        if trigger.form_id is not None:
            return lambda props: props.get("form_id") == trigger.form_id
        return lambda props: props.get("form_name") == trigger.form
    if isinstance(trigger, EmailEngagementTrigger):
        return lambda props: trigger.template_id in (None, props.get("template_id"))
    if isinstance(trigger, SegmentTrigger):
        return lambda props: props.get("segment_id") == trigger.segment_id
    return lambda props: False


def on_events(session: Session, events: Sequence[IngestedEvent]) -> None:
    """Enrol, wake and convert for a batch of newly stored events."""
    if not events:
        return
    now = clock.now()
    by_name: dict[str, list[IngestedEvent]] = defaultdict(list)
    for event in events:
        by_name[event.name].append(event)
    entering, heard = _running(
        session, one_of(session, WorkflowVersion.trigger_event, list(by_name))
    )
    plans = []
    for graph in entering:
        trigger = graph.definition.trigger
        matches = trigger_matcher(trigger)
        candidates = [
            Candidate(
                e.contact_id,
                {
                    "trigger": {
                        "type": trigger.type,
                        "event": e.name,
                        "event_id": e.id,
                        "properties": e.properties,
                    }
                },
            )
            for e in by_name.get(trigger_event_name(trigger) or "", [])
            if matches(e.properties)
        ]
        if candidates:
            plans.append((graph, candidates))
    if plans:
        enroll_many(session, plans, now)
    if heard.wait_events & set(by_name):
        wake_waiting(session, events, now)
    if heard.goal_condition or heard.goal_events & set(by_name):
        convert_goals(session, sorted({e.contact_id for e in events}), now, events=events)


def _running(session: Session, enters: Any) -> tuple[list[Graph], Listeners]:
    """One query over the versions of active and paused workflows: the graphs new contacts
    enter (active workflows' current versions for which ``enters`` holds, as
    ``active_graphs`` selects them) and what all of them listen for."""
    rows = session.execute(
        select(
            WorkflowVersion.id,
            WorkflowVersion.digest,
            (Workflow.status == WorkflowStatus.ACTIVE)
            & (Workflow.active_version_id == WorkflowVersion.id)
            & enters,
        )
        .join(Workflow, Workflow.id == WorkflowVersion.workflow_id)
        .where(Workflow.status.in_([WorkflowStatus.ACTIVE, WorkflowStatus.PAUSED]))
        .order_by(WorkflowVersion.id)
    ).all()
    graphs = graphs_for(session, {version_id: digest for version_id, digest, _ in rows})
    entering = [graphs[version_id] for version_id, _, chosen in rows if chosen]
    return entering, _listening(graphs.values())


@dataclass(frozen=True)
class Listeners:
    """What running workflows listen for, so ingestion skips the lookups nobody needs."""

    wait_events: frozenset[str]
    goal_events: frozenset[str]
    goal_condition: bool


def _listening(graphs: Iterable[Graph]) -> Listeners:
    """What the versions of active and paused workflows listen for: the events waits wait
    for, the goal events, whether any goal is a condition."""
    waits: set[str] = set()
    goals: set[str] = set()
    condition = False
    for graph in graphs:
        waits |= {n.event for n in graph.definition.nodes if isinstance(n, WaitEventNode)}
        goal = graph.settings.goal
        if goal is not None:
            if goal.event is not None:
                goals.add(goal.event)
            condition = condition or goal.condition is not None
    return Listeners(frozenset(waits), frozenset(goals), condition)


def _open_enrollments(
    session: Session, contact_ids: Sequence[int], columns: tuple[Any, ...], *where: Any
) -> list[Any]:
    """``columns`` of the open enrolments of these contacts that also meet ``where``, read
    CHUNK contacts at a time."""
    rows: list[Any] = []
    for start in range(0, len(contact_ids), CHUNK):
        rows += session.execute(
            select(*columns).where(
                one_of(session, Enrollment.contact_id, contact_ids[start : start + CHUNK]),
                Enrollment.status.in_(OPEN_STATUSES),
                *where,
            )
        ).all()
    return rows


def wake_waiting(session: Session, events: Sequence[IngestedEvent], now: datetime) -> int:
    """Enrolments waiting for one of these events leave by ``happened`` at the next tick;
    the choice is made now, so a tick after the timeout still sees that it happened."""
    names = sorted({e.name for e in events})
    contact_ids = sorted({e.contact_id for e in events})
    rows = _open_enrollments(
        session,
        contact_ids,
        (
            Enrollment.id,
            Enrollment.workflow_version_id,
            Enrollment.current_node,
            Enrollment.contact_id,
            Enrollment.waiting_since,
            Enrollment.next_run_at,
        ),
        Enrollment.waiting_event.in_(names),
    )
    if not rows:
        return 0
    graphs = load_graphs(session, {r.workflow_version_id for r in rows})
    by_contact: dict[int, list[IngestedEvent]] = defaultdict(list)
    for event in events:
        by_contact[event.contact_id].append(event)
    woken: dict[tuple[str, str], list[int]] = defaultdict(list)
    for row in rows:
        graph = graphs.get(row.workflow_version_id)
        node = graph.nodes.get(row.current_node) if graph and row.current_node else None
        if not isinstance(node, WaitEventNode):
            continue
        for event in by_contact[row.contact_id]:
            in_time = row.waiting_since is None or event.occurred_at >= row.waiting_since
            if (
                event.name == node.event
                and in_time
                and (row.next_run_at is None or event.occurred_at <= row.next_run_at)
                and conditions.event_matches(node.where, event.properties)
            ):
                woken[(node.id, node.event)].append(row.id)
                break
    total = 0
    for (node_id, event_name), ids in woken.items():
        # The WHERE re-checks the wait: a worker that moved the row meanwhile wins.
        result = session.execute(
            update(Enrollment)
            .where(
                Enrollment.id.in_(ids),
                Enrollment.current_node == node_id,
                Enrollment.waiting_event == event_name,
                Enrollment.status.in_(OPEN_STATUSES),
            )
            .values(resume_exit="happened", waiting_event=None, next_run_at=now)
            .execution_options(synchronize_session=False)
        )
        total += int(result.rowcount or 0)  # type: ignore[attr-defined]  # CursorResult
    return total


def convert_goals(
    session: Session,
    contact_ids: Sequence[int],
    now: datetime,
    *,
    events: Sequence[IngestedEvent] | None = None,
) -> int:
    """Convert open enrolments of these contacts whose goal is now met. With ``events``,
    event goals are checked against those events; condition goals always are."""
    if not contact_ids:
        return 0
    wanted = [WorkflowVersion.goal_condition.is_(True)]
    if events:
        wanted.append(WorkflowVersion.goal_event.in_(sorted({e.name for e in events})))
    goal_versions = select(WorkflowVersion.id).where(or_(*wanted))
    rows = _open_enrollments(
        session,
        contact_ids,
        (
            Enrollment.id,
            Enrollment.workflow_version_id,
            Enrollment.contact_id,
            Enrollment.enrolled_at,
            Enrollment.context,
        ),
        Enrollment.workflow_version_id.in_(goal_versions),
    )
    if not rows:
        return 0
    graphs = load_graphs(session, {r.workflow_version_id for r in rows})
    seen = (
        [SeenEvent(e.contact_id, e.name, e.properties, e.occurred_at) for e in events]
        if events is not None
        else []
    )
    by_version: dict[int, list[Open]] = defaultdict(list)
    for r in rows:
        by_version[r.workflow_version_id].append(
            Open(r.id, r.contact_id, r.enrolled_at, dict(r.context or {}))
        )
    met: list[int] = []
    for version_id, opened in by_version.items():
        met += goal_conversions(session, graphs[version_id], opened, now, events=seen)
    return len(
        finish_enrollments(
            session, met, EnrollmentStatus.CONVERTED, exit_label="converted", now=now
        )
    )


# --- contact changes ---------------------------------------------------------------------


def _field_value_sql(session: Session, field: str) -> Any:
    if field.startswith("attributes."):
        name = field.removeprefix("attributes.")
        if is_postgres(session):
            return Contact.attributes.op("->")(name)
        return func.json_extract(Contact.attributes, f'$."{name}"')
    column = getattr(Contact, field)
    return func.to_jsonb(column) if is_postgres(session) else column


def _normalise(value: Any) -> Any:
    return getattr(value, "value", value)


def current_values(session: Session, field: str, contact_ids: Sequence[int]) -> dict[int, Any]:
    if field.startswith("attributes."):
        name = field.removeprefix("attributes.")
        rows = session.execute(
            select(Contact.id, Contact.attributes).where(
                one_of(session, Contact.id, list(contact_ids))
            )
        )
        return {cid: (attributes or {}).get(name) for cid, attributes in rows}
    column = getattr(Contact, field)
    rows = session.execute(
        select(Contact.id, column).where(one_of(session, Contact.id, list(contact_ids)))
    )
    return {cid: _normalise(value) for cid, value in rows}


def snapshot_field(session: Session, field: str) -> None:
    """Record every contact's current value of ``field`` (on publish and resume)."""
    if is_postgres(session):
        value = _field_value_sql(session, field)
        source = select(Contact.id, literal(field), value)
        insert = postgresql.insert(ContactFieldSnapshot).from_select(
            ["contact_id", "field", "value"], source
        )
        session.execute(
            insert.on_conflict_do_update(
                index_elements=["contact_id", "field"], set_={"value": insert.excluded.value}
            )
        )
        return
    last = 0
    while True:
        ids = list(
            session.scalars(
                select(Contact.id).where(Contact.id > last).order_by(Contact.id).limit(CHUNK)
            )
        )
        if not ids:
            return
        _store_snapshots(session, field, current_values(session, field, ids))
        last = ids[-1]


def _store_snapshots(session: Session, field: str, values: dict[int, Any]) -> None:
    if not values:
        return
    insert = dialect_insert(session, ContactFieldSnapshot).values(
        [{"contact_id": c, "field": field, "value": v} for c, v in values.items()]
    )
    session.execute(
        insert.on_conflict_do_update(
            index_elements=["contact_id", "field"], set_={"value": insert.excluded.value}
        )
    )


def on_contact_changes(session: Session, contact_ids: Sequence[int]) -> None:
    if not contact_ids:
        return
    now = clock.now()
    entering, heard = _running(session, WorkflowVersion.trigger_type == "field_changed")
    watchers: dict[str, list[Graph]] = defaultdict(list)
    for graph in entering:
        trigger = graph.definition.trigger
        assert isinstance(trigger, FieldChangedTrigger)
        watchers[trigger.field].append(graph)
    ids = sorted(set(contact_ids))
    for field, graphs in watchers.items():
        for start in range(0, len(ids), CHUNK):
            chunk = ids[start : start + CHUNK]
            new = current_values(session, field, chunk)
            old: dict[int, Any] = dict(
                session.execute(
                    select(ContactFieldSnapshot.contact_id, ContactFieldSnapshot.value).where(
                        ContactFieldSnapshot.field == field,
                        one_of(session, ContactFieldSnapshot.contact_id, chunk),
                    )
                ).all()
            )
            changed = {c: (old.get(c), v) for c, v in new.items() if c not in old or old[c] != v}
            _store_snapshots(session, field, {c: v for c, (_, v) in changed.items()})
            plans = []
            for graph in graphs:
                trigger = graph.definition.trigger
                assert isinstance(trigger, FieldChangedTrigger)
                candidates = [
                    Candidate(
                        c,
                        {"trigger": {"type": "field_changed", "field": field, "from": o, "to": n}},
                    )
                    for c, (o, n) in changed.items()
                    if trigger.matches(o, n)
                ]
                if candidates:
                    plans.append((graph, candidates))
            enroll_many(session, plans, now)
    if heard.goal_condition:
        convert_goals(session, ids, now)


# --- dates -------------------------------------------------------------------------------


def _date_candidates(
    session: Session, attribute: str, lo: date, hi: date, anniversary: bool
) -> Select[Any]:
    value = Contact.attributes[attribute].as_string()
    query = select(Contact.id, Contact.time_zone, value)
    if not anniversary:
        return query.where(value >= lo.isoformat(), value <= (hi + timedelta(days=1)).isoformat())
    days = {(lo + timedelta(days=n)).strftime("%m-%d") for n in range((hi - lo).days + 1)}
    if "02-28" in days:
        days.add("02-29")  # leap-day birthdays are celebrated on the 28th otherwise
    return query.where(func.substr(value, 6, 5).in_(sorted(days)))


def scan_date_triggers(session: Session, now: datetime | None = None) -> int:
    """Enrol contacts whose date trigger moment (in their zone) has come since the last
    scans; each occurrence once (the trigger_key holds its date). Returns enrolments."""
    now = now or clock.now()
    total = 0
    for graph in active_graphs(session, trigger_types=["date", "anniversary"]):
        trigger = graph.definition.trigger
        assert isinstance(trigger, DateTrigger | AnniversaryTrigger)
        attribute = trigger.field.removeprefix("attributes.")
        lower = max(now - DATE_LOOKBACK, graph.published_at)
        offset = trigger.offset_days if isinstance(trigger, DateTrigger) else 0
        lo = lower.date() - timedelta(days=offset + 1)
        hi = now.date() - timedelta(days=offset - 1)
        anniversary = isinstance(trigger, AnniversaryTrigger)
        candidates = []
        fallback = graph.settings.fallback_time_zone
        for contact_id, zone_name, value in session.execute(
            _date_candidates(session, attribute, lo, hi, anniversary)
        ):
            zone = contact_zone(zone_name, fallback)
            for key, moment in _occurrences(trigger, value, zone, now):
                if lower < moment <= now:
                    context = {
                        "trigger": {"type": trigger.type, "field": trigger.field, "date": key}
                    }
                    candidates.append(Candidate(contact_id, context, key))
                    break
        if candidates:
            total += len(enroll_contacts(session, graph, candidates, now))
    return total


def _occurrences(trigger: Any, value: Any, zone: Any, now: datetime) -> list[tuple[str, datetime]]:
    if isinstance(trigger, DateTrigger):
        moment = date_target(value, trigger.offset_days, trigger.time, zone)
        return [] if moment is None else [(str(value)[:10], moment)]
    day = parse_date(value)
    if day is None:
        return []
    out = []
    for year in (now.year - 1, now.year, now.year + 1):
        when = anniversary_in(day, year)
        out.append((when.isoformat(), local_instant(when, trigger.time, zone)))
    return out
