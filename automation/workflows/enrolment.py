"""Putting contacts into a workflow, set-wise and idempotently.

At most one open enrolment per workflow and contact is guaranteed by a partial unique
index (``uq_enrollments_open_workflow_contact``); inserts use ON CONFLICT DO NOTHING, so
fifty concurrent deliveries of one event make exactly one enrolment. The re-entry rule
(once / always / after a cool-down) is checked in the same statement's transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Select, and_, exists, literal, or_, select
from sqlalchemy.orm import Session

from automation.addresses import normalize_email
from automation.bulk import insert_rows
from automation.contacts.models import Contact
from automation.db import UTCDateTime, dialect_insert, one_of
from automation.errors import Conflict, FieldError, InvalidInput
from automation.workflows.graph import Graph, load_graphs
from automation.workflows.models import (
    OPEN_STATUSES,
    Enrollment,
    EnrollmentStatus,
    Workflow,
    WorkflowStatus,
    WorkflowVersion,
)
from automation.workflows.timing import after_duration, contact_zone

CHUNK = 5000


@dataclass(frozen=True)
class Candidate:
    contact_id: int
    context: dict[str, Any] = field(default_factory=dict)
    trigger_key: str | None = None


def active_graphs(
    session: Session,
    *,
    workflow_ids: Sequence[int] | None = None,
    trigger_events: Sequence[str] | None = None,
    trigger_types: Sequence[str] | None = None,
) -> list[Graph]:
    """The graphs new contacts enter: active workflows' current versions."""
    query = (
        select(WorkflowVersion.id)
        .join(Workflow, Workflow.active_version_id == WorkflowVersion.id)
        .where(Workflow.status == WorkflowStatus.ACTIVE)
    )
    if workflow_ids is not None:
        query = query.where(Workflow.id.in_(workflow_ids))
    if trigger_events is not None:
        # One array parameter: a batch's event names vary, the statement text does not.
        query = query.where(one_of(session, WorkflowVersion.trigger_event, trigger_events))
    if trigger_types is not None:
        query = query.where(WorkflowVersion.trigger_type.in_(trigger_types))
    graphs = load_graphs(session, query)
    return [graphs[i] for i in sorted(graphs)]


def _reentry_blocks(graph: Graph, now: datetime) -> Any:
    """SQL: an existing enrolment ``Enrollment`` that forbids a new one."""
    reentry = graph.settings.reentry
    if reentry.mode == "once":
        return literal(True)
    if reentry.mode == "always":
        return Enrollment.status.in_(OPEN_STATUSES)
    since = _cooldown_start(graph, now)
    return or_(Enrollment.status.in_(OPEN_STATUSES), Enrollment.enrolled_at > since)


def _cooldown_start(graph: Graph, now: datetime) -> datetime:
    cooldown = graph.settings.reentry.cooldown
    assert cooldown is not None
    # now - cooldown: walk back by the same calendar rule the waits use, in UTC.
    back = after_duration(now, cooldown, contact_zone("UTC", "UTC")) - now
    return now - back


def _row(
    graph: Graph, contact_id: int, now: datetime, context: dict[str, Any], key: str | None
) -> dict[str, Any]:
    return {
        "workflow_id": graph.workflow_id,
        "workflow_version_id": graph.version_id,
        "contact_id": contact_id,
        "status": EnrollmentStatus.ACTIVE,
        "current_node": graph.start,
        "waiting_since": None,
        "next_run_at": now,
        "waiting_event": None,
        "resume_exit": None,
        "attempts": 0,
        "context": context,
        "trigger_key": key,
        "enrolled_at": now,
        "converted_at": None,
        "finished_at": None,
    }


def enroll_contacts(
    session: Session, graph: Graph, candidates: Sequence[Candidate], now: datetime
) -> list[int]:
    """Enrol the candidates the re-entry rule allows; returns the contact ids enrolled."""
    return enroll_many(session, [(graph, candidates)], now).get(graph.workflow_id, [])


def enroll_many(
    session: Session, plans: Sequence[tuple[Graph, Sequence[Candidate]]], now: datetime
) -> dict[int, list[int]]:
    """Enrol candidates into several workflows at once: one SELECT finds the earlier
    enrolments that forbid re-entry, one INSERT ... ON CONFLICT DO NOTHING adds the rest
    (the unique indexes settle races with concurrent transactions). Returns the contact
    ids enrolled per workflow id."""
    wanted: list[tuple[Graph, Candidate]] = []
    for graph, candidates in plans:
        seen: set[int] = set()
        for candidate in candidates:
            if candidate.contact_id not in seen:
                seen.add(candidate.contact_id)
                wanted.append((graph, candidate))
    enrolled: dict[int, list[int]] = {}
    for start in range(0, len(wanted), CHUNK):
        chunk = wanted[start : start + CHUNK]
        earlier = (
            _earlier_enrollments(session, chunk, now)
            if any(_may_be_blocked(graph, c) for graph, c in chunk)
            else {}
        )
        rows = [
            _row(graph, c.contact_id, now, c.context, c.trigger_key)
            for graph, c in chunk
            if not _blocked(graph, c, earlier.get((graph.workflow_id, c.contact_id), ()), now)
        ]
        table = Enrollment
        for workflow_id, contact_id in insert_rows(
            session,
            table,
            rows,
            returning=["workflow_id", "contact_id"],
            skip_conflicts=True,
        ):
            enrolled.setdefault(workflow_id, []).append(contact_id)
    return enrolled


def _earlier_enrollments(
    session: Session, wanted: Sequence[tuple[Graph, Candidate]], now: datetime
) -> dict[tuple[int, int], list[Any]]:
    """The earlier enrolments of these contacts that could block a new one: open ones,
    any in a once-only workflow, recent ones under a cool-down, the same occurrence of a
    date trigger. (Not the whole history: "always" workflows collect a lot of it.)"""
    contacts = sorted({c.contact_id for _, c in wanted})
    workflows = sorted({g.workflow_id for g, _ in wanted})
    graphs = {g.workflow_id: g for g, _ in wanted}
    once = [w for w, g in graphs.items() if g.settings.reentry.mode == "once"]
    cooling = [w for w, g in graphs.items() if g.settings.reentry.mode == "cooldown"]
    keys = sorted({c.trigger_key for _, c in wanted if c.trigger_key is not None})
    blocking: list[Any] = [Enrollment.status.in_(OPEN_STATUSES)]
    if once:
        blocking.append(Enrollment.workflow_id.in_(once))
    if cooling:
        since = min(_cooldown_start(graphs[w], now) for w in cooling)
        blocking.append(Enrollment.workflow_id.in_(cooling) & (Enrollment.enrolled_at > since))
    if keys:
        blocking.append(Enrollment.trigger_key.in_(keys))
    rows = session.execute(
        select(
            Enrollment.workflow_id,
            Enrollment.contact_id,
            Enrollment.status,
            Enrollment.enrolled_at,
            Enrollment.trigger_key,
        ).where(
            one_of(session, Enrollment.contact_id, contacts),
            Enrollment.workflow_id.in_(workflows),
            or_(*blocking),
        )
    )
    out: dict[tuple[int, int], list[Any]] = {}
    for row in rows:
        out.setdefault((row.workflow_id, row.contact_id), []).append(row)
    return out


def _may_be_blocked(graph: Graph, candidate: Candidate) -> bool:
    """Whether an earlier enrolment could forbid this one beyond an open one in the same
    workflow, which the partial unique index already turns away (ON CONFLICT DO NOTHING)."""
    return candidate.trigger_key is not None or graph.settings.reentry.mode != "always"


def _blocked(graph: Graph, candidate: Candidate, earlier: Sequence[Any], now: datetime) -> bool:
    """Whether an earlier enrolment forbids this one (the re-entry rule, or the same
    date-trigger occurrence)."""
    if not earlier:
        return False
    if candidate.trigger_key is not None and any(
        e.trigger_key == candidate.trigger_key for e in earlier
    ):
        return True
    mode = graph.settings.reentry.mode
    if mode == "once":
        return True
    if any(e.status in OPEN_STATUSES for e in earlier):
        return True
    if mode == "cooldown":
        since = _cooldown_start(graph, now)
        return any(e.enrolled_at > since for e in earlier)
    return False


def enroll_query(
    session: Session,
    graph: Graph,
    contact_ids: Select[tuple[int]],
    now: datetime,
    context: dict[str, Any],
) -> int:
    """Enrol every contact the query selects (a segment, a list): one INSERT ... SELECT
    whatever their number. Returns how many were enrolled."""
    source = contact_ids.subquery()
    earlier = exists().where(
        Enrollment.workflow_id == graph.workflow_id,
        Enrollment.contact_id == source.c[0],
        _reentry_blocks(graph, now),
    )
    chosen = select(
        literal(graph.workflow_id),
        literal(graph.version_id),
        source.c[0],
        literal(EnrollmentStatus.ACTIVE.value),
        literal(graph.start),
        literal(now, UTCDateTime()),
        literal(0),
        literal(context, Enrollment.context.type),
        literal(now, UTCDateTime()),
    ).where(and_(~earlier, source.c[0].in_(select(Contact.id))))
    stmt = (
        dialect_insert(session, Enrollment)
        .from_select(
            [
                "workflow_id",
                "workflow_version_id",
                "contact_id",
                "status",
                "current_node",
                "next_run_at",
                "attempts",
                "context",
                "enrolled_at",
            ],
            chosen,
        )
        .on_conflict_do_nothing()
        .returning(Enrollment.id)
    )
    return len(session.scalars(stmt).all())


def enroll_manually(
    session: Session,
    workflow_id: int,
    *,
    contact_ids: Sequence[int] = (),
    emails: Sequence[str] = (),
    query: Select[tuple[int]] | None = None,
    source: str = "manual",
    now: datetime,
) -> int:
    """Manual, API or bulk enrolment, into any active workflow whatever its trigger; how
    many entered (contacts already in it, or not allowed to enter again, are left out).
    Contacts named by id or email must all exist: otherwise nobody is enrolled and each
    unknown one is named."""
    graphs = active_graphs(session, workflow_ids=[workflow_id])
    if not graphs:
        workflow = session.get(Workflow, workflow_id)
        state = workflow.status.value if workflow else "missing"
        raise Conflict(f"workflow {workflow_id} is {state}: only an active workflow takes contacts")
    graph = graphs[0]
    context = {"trigger": {"type": source}}
    if query is not None:
        return enroll_query(session, graph, query, now, context)
    known = named_contacts(session, contact_ids, emails)
    return len(enroll_contacts(session, graph, [Candidate(c, context) for c in known], now))


NAMED_ERRORS = 20  # unknown contacts named one by one; past this, a count


def named_contacts(
    session: Session, contact_ids: Sequence[int], emails: Sequence[str]
) -> list[int]:
    """The ids of the contacts named by id or by email, each once, in the order given;
    InvalidInput naming every id or email that is not a contact (or not an address)."""
    errors: list[FieldError] = []
    found = set(session.scalars(select(Contact.id).where(one_of(session, Contact.id, contact_ids))))
    for i, contact_id in enumerate(contact_ids):
        if contact_id not in found:
            errors.append(FieldError(f"contact_ids[{i}]", f"no contact {contact_id}"))
    normalized: list[str | ValueError] = []
    for raw in emails:
        try:
            normalized.append(normalize_email(raw))
        except ValueError as exc:
            normalized.append(exc)
    addresses = [a for a in normalized if isinstance(a, str)]
    by_email: dict[str, int] = {
        email: id_
        for email, id_ in session.execute(
            select(Contact.email, Contact.id).where(Contact.email.in_(addresses))
        )
    }
    for i, address in enumerate(normalized):
        if isinstance(address, ValueError):
            errors.append(FieldError(f"emails[{i}]", str(address)))
        elif address not in by_email:
            errors.append(FieldError(f"emails[{i}]", f"no contact with the email {address}"))
    if errors:
        shown = errors[:NAMED_ERRORS]
        if len(errors) > NAMED_ERRORS:
            shown.append(FieldError("", f"and {len(errors) - NAMED_ERRORS} more not found"))
        raise InvalidInput(shown)
    return list(dict.fromkeys([*contact_ids, *(by_email[a] for a in addresses)]))
