"""Materialised membership: refresh computes who entered and who left, set-wise, and records
``segment.entered`` / ``segment.left`` events for workflow triggers.

Refreshes run in three ways, all through ``_apply``: a full refresh of one segment (the
periodic reconciliation, and after a definition changes), an incremental refresh of the
contacts touched by new events or field changes (called from automation/reactions.py in
the same transaction), and explicit edits of static lists. A refresh locks its segment row
first, so a full refresh and an incremental one never decide from different snapshots
(PostgreSQL; SQLite has a single writer anyway).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Select,
    delete,
    exists,
    false,
    func,
    insert,
    literal,
    select,
    union_all,
)
from sqlalchemy.orm import Session

from automation import clock
from automation.db import JSONDoc, UTCDateTime, dialect_insert, is_postgres
from automation.errors import Conflict, NotFound
from automation.reactions import IngestedEvent, react_to_events
from automation.segments.compiler import contacts, events, matching_ids, memberships
from automation.segments.context import load_catalog, load_segments
from automation.segments.dialects import Sql
from automation.segments.models import Segment, SegmentKind
from automation.segments.schema import (
    Catalog,
    FieldCondition,
    Filter,
    SegmentCondition,
    TagCondition,
    walk,
)

ENTERED = "segment.entered"
LEFT = "segment.left"
EVENT_SOURCE = "segment"
CHUNK = 5000


@dataclass
class RefreshResult:
    segment_id: int
    entered: list[int] = field(default_factory=list)
    left: list[int] = field(default_factory=list)

    def as_dict(self) -> dict[str, int]:
        return {
            "segment_id": self.segment_id,
            "entered": len(self.entered),
            "left": len(self.left),
        }


def _lock(session: Session, segment_id: int) -> Segment:
    segment = session.scalar(select(Segment).where(Segment.id == segment_id).with_for_update())
    if segment is None:
        raise NotFound(f"segment {segment_id} not found")
    return segment


def _apply(
    session: Session,
    segment: Segment,
    matching: Select[int],
    among_ids: Sequence[int] | None,
    *,
    emit: bool,
    now: datetime,
) -> RefreshResult:
    """Make the stored members of ``segment`` (within ``among_ids``) equal ``matching``."""
    scope = [memberships.c.segment_id == segment.id]
    if among_ids is not None:
        scope.append(
            Sql(session.get_bind().dialect.name).ids_in(memberships.c.contact_id, among_ids)
        )
    properties = {"segment_id": segment.id, "segment": segment.name}
    if is_postgres(session):
        result = _apply_postgres(session, segment.id, matching, scope, properties, emit, now)
    else:
        result = _apply_stepwise(session, segment.id, matching, scope, properties, emit, now)
    segment.member_count += len(result.entered) - len(result.left)
    return result


def _apply_postgres(
    session: Session,
    segment_id: int,
    matching: Select[int],
    scope: list[Any],
    properties: dict[str, Any],
    emit: bool,
    now: datetime,
) -> RefreshResult:
    # One statement, so the segment is evaluated once: the matching ids feed both the
    # DELETE of those who left and the INSERT of those who entered (data-modifying CTEs
    # share one snapshot; the two sets are disjoint), and their RETURNING rows feed the
    # INSERT of the entered/left events.
    found = matching.cte("matching")
    existing = memberships.alias("existing")
    left = (
        delete(memberships)
        .where(*scope, ~exists(select(1).where(found.c.id == memberships.c.contact_id)))
        .returning(memberships.c.contact_id)
        .cte("left_rows")
    )
    entered = (
        dialect_insert(session, memberships)
        .from_select(
            ["segment_id", "contact_id", "entered_at"],
            select(literal(segment_id), found.c.id, literal(now, UTCDateTime)).where(
                ~exists(
                    select(1).where(
                        existing.c.segment_id == segment_id, existing.c.contact_id == found.c.id
                    )
                )
            ),
        )
        .on_conflict_do_nothing()
        .returning(memberships.c.contact_id)
        .cte("entered_rows")
    )
    if not emit:
        rows = session.execute(
            select(entered.c.contact_id, literal(ENTERED)).union_all(
                select(left.c.contact_id, literal(LEFT))
            )
        ).all()
        return _split(segment_id, [(None, cid, name) for cid, name in rows])

    def event_rows(source: Any, name: str) -> Select[Any]:
        return select(
            source.c.contact_id,
            literal(name),
            literal(properties, JSONDoc),
            literal(now, UTCDateTime),
            literal(now, UTCDateTime),
            literal(EVENT_SOURCE),
        )

    stmt = (
        insert(events)
        .from_select(
            ["contact_id", "name", "properties", "occurred_at", "received_at", "source"],
            union_all(event_rows(entered, ENTERED), event_rows(left, LEFT)),
        )
        .returning(events.c.id, events.c.contact_id, events.c.name)
    )
    rows = session.execute(stmt).all()
    return _finish(session, segment_id, rows, properties, now)


def _apply_stepwise(
    session: Session,
    segment_id: int,
    matching: Select[int],
    scope: list[Any],
    properties: dict[str, Any],
    emit: bool,
    now: datetime,
) -> RefreshResult:
    """The same as _apply_postgres in three statements (SQLite has no DML in CTEs)."""
    found = matching.subquery()
    existing = memberships.alias("existing")
    entered = session.scalars(
        insert(memberships)
        .from_select(
            ["segment_id", "contact_id", "entered_at"],
            select(literal(segment_id), found.c.id, literal(now, UTCDateTime)).where(
                ~exists(
                    select(1).where(
                        existing.c.segment_id == segment_id, existing.c.contact_id == found.c.id
                    )
                )
            ),
        )
        .returning(memberships.c.contact_id)
    ).all()
    left = session.scalars(
        delete(memberships)
        .where(*scope, memberships.c.contact_id.not_in(select(found.c.id)))
        .returning(memberships.c.contact_id)
    ).all()
    pairs = [(cid, ENTERED) for cid in entered] + [(cid, LEFT) for cid in left]
    if not emit or not pairs:
        return _split(segment_id, [(None, cid, name) for cid, name in pairs])
    ids = session.scalars(
        insert(events).returning(events.c.id, sort_by_parameter_order=True),
        [
            {
                "contact_id": cid,
                "name": name,
                "properties": properties,
                "occurred_at": now,
                "received_at": now,
                "source": EVENT_SOURCE,
            }
            for cid, name in pairs
        ],
    ).all()
    rows = [(event_id, cid, name) for event_id, (cid, name) in zip(ids, pairs, strict=True)]
    return _finish(session, segment_id, rows, properties, now)


def _split(segment_id: int, rows: Iterable[tuple[Any, int, str]]) -> RefreshResult:
    result = RefreshResult(segment_id)
    for _, contact_id, name in rows:
        (result.entered if name == ENTERED else result.left).append(contact_id)
    return result


def _finish(
    session: Session,
    segment_id: int,
    rows: Sequence[Any],
    properties: dict[str, Any],
    now: datetime,
) -> RefreshResult:
    """Hand the new segment events to every reaction (workflow "entered segment" triggers)."""
    result = _split(segment_id, rows)
    react_to_events(
        session,
        [IngestedEvent(event_id, cid, name, dict(properties), now) for event_id, cid, name in rows],
    )
    return result


# --- dynamic segments ---------------------------------------------------------------------


def refresh_segment(session: Session, segment_id: int) -> RefreshResult:
    """Re-evaluate a dynamic segment over every contact and store the difference.

    The first refresh of a segment records its members without events: contacts already
    matching when a segment is created did not "enter" it.
    """
    segment = _lock(session, segment_id)
    if segment.kind is not SegmentKind.DYNAMIC:
        raise Conflict(f"segment {segment.name!r} is a static list; it has nothing to refresh")
    now = clock.now()
    catalog = load_catalog(session)
    load_segments(session, catalog, [segment.id])
    tree = catalog.segments[segment.id].tree
    if tree is None:
        raise Conflict(f"segment {segment.name!r} has no usable definition")
    matching = matching_ids(session, tree, catalog=catalog, now=now)
    emit = segment.refreshed_at is not None
    result = _apply(session, segment, matching, None, emit=emit, now=now)
    # Recounted rather than adjusted: deleted contacts leave by cascade, uncounted.
    segment.member_count = _count_members(session, segment.id)
    segment.refreshed_at = now
    return result


def _count_members(session: Session, segment_id: int) -> int:
    return (
        session.scalar(
            select(func.count())
            .select_from(memberships)
            .where(memberships.c.segment_id == segment_id)
        )
        or 0
    )


@dataclass(frozen=True)
class Dependencies:
    """What can change a segment's answer for a contact (besides the passing of time)."""

    events: frozenset[str]
    contact: bool  # fields, attributes, tags or static lists


def dependencies(tree: Filter, catalog: Catalog) -> Dependencies:
    from automation.segments.evaluator import needed_events

    contact = False
    pending, seen = [tree], set()
    while pending:
        for _, node in walk(pending.pop().conditions):
            if isinstance(node, FieldCondition | TagCondition):
                contact = True
            elif isinstance(node, SegmentCondition):
                ref = catalog.segments.get(node.segment)
                if ref is not None and not ref.dynamic:
                    contact = True
                elif ref is not None and ref.tree is not None and ref.id not in seen:
                    seen.add(ref.id)
                    pending.append(ref.tree)
    return Dependencies(frozenset(needed_events(tree, catalog)), contact)


def refresh_contacts(
    session: Session,
    contact_ids: Iterable[int],
    *,
    event_names_by_contact: dict[int, set[str]] | None = None,
) -> list[RefreshResult]:
    """Incremental refresh of the given contacts in every dynamic segment they can affect.

    With ``event_names_by_contact`` (new events), a segment is refreshed for the contacts
    whose new events it looks at; without it (changed fields or tags), for every contact,
    in each segment that looks at contact data.
    """
    ids = sorted(set(contact_ids))
    if not ids:
        return []
    rows = session.execute(
        select(Segment.id)
        .where(Segment.kind == SegmentKind.DYNAMIC, Segment.refreshed_at.is_not(None))
        .order_by(Segment.id)
    ).all()
    if not rows:
        return []
    catalog = load_catalog(session)
    load_segments(session, catalog, [r.id for r in rows])
    now = clock.now()
    results = []
    for (segment_id,) in rows:
        tree = catalog.segments[segment_id].tree
        if tree is None:
            continue
        deps = dependencies(tree, catalog)
        if event_names_by_contact is None:
            if not deps.contact:
                continue
            among = ids
        else:
            among = [c for c in ids if event_names_by_contact.get(c, set()) & deps.events]
            if not among:
                continue
        segment = _lock(session, segment_id)
        if segment.refreshed_at is None:
            continue
        for start in range(0, len(among), CHUNK):
            chunk = among[start : start + CHUNK]
            matching = matching_ids(session, tree, among_ids=chunk, catalog=catalog, now=now)
            results.append(_apply(session, segment, matching, chunk, emit=True, now=now))
    return results


def refresh_for_events(session: Session, new_events: Sequence[IngestedEvent]) -> None:
    """Reaction to new events (automation/reactions.py). Segment events themselves are
    skipped: conditions on ``segment.*`` events are caught up by the periodic refresh."""
    names: dict[int, set[str]] = defaultdict(set)
    for event in new_events:
        if not event.name.startswith("segment."):
            names[event.contact_id].add(event.name)
    if names:
        refresh_contacts(session, names.keys(), event_names_by_contact=names)


def due_segment_ids(session: Session) -> list[int]:
    """Dynamic segments for the periodic full reconciliation, least recently refreshed first."""
    return list(
        session.scalars(
            select(Segment.id)
            .where(Segment.kind == SegmentKind.DYNAMIC)
            .order_by(Segment.refreshed_at.is_not(None), Segment.refreshed_at, Segment.id)
        )
    )


# --- static lists ---------------------------------------------------------------------


def _static(session: Session, segment_id: int) -> Segment:
    segment = _lock(session, segment_id)
    if segment.kind is not SegmentKind.STATIC:
        raise Conflict(f"segment {segment.name!r} is dynamic: its members follow its conditions")
    return segment


def _existing_contacts(session: Session, contact_ids: Sequence[int]) -> list[int]:
    sql = Sql(session.get_bind().dialect.name)
    found: list[int] = []
    for start in range(0, len(contact_ids), CHUNK):
        chunk = contact_ids[start : start + CHUNK]
        found.extend(session.scalars(select(contacts.c.id).where(sql.ids_in(contacts.c.id, chunk))))
    return found


def add_members(session: Session, segment_id: int, contact_ids: Iterable[int]) -> RefreshResult:
    """Add contacts to a static list (unknown ids are ignored); returns who entered."""
    return _edit_list(session, segment_id, contact_ids, "add")


def remove_members(session: Session, segment_id: int, contact_ids: Iterable[int]) -> RefreshResult:
    return _edit_list(session, segment_id, contact_ids, "remove")


def replace_members(session: Session, segment_id: int, contact_ids: Iterable[int]) -> RefreshResult:
    """Make the list's members exactly ``contact_ids``."""
    return _edit_list(session, segment_id, contact_ids, "replace")


def _edit_list(
    session: Session, segment_id: int, contact_ids: Iterable[int], mode: str
) -> RefreshResult:
    segment = _static(session, segment_id)
    ids = sorted(set(contact_ids))
    now = clock.now()
    sql = Sql(session.get_bind().dialect.name)
    result = RefreshResult(segment.id)
    if mode in ("add", "replace"):
        ids = _existing_contacts(session, ids)
        for start in range(0, len(ids), CHUNK):
            chunk = ids[start : start + CHUNK]
            # Every listed contact "matches"; the others in the chunk's scope are untouched.
            wanted = select(contacts.c.id).where(sql.ids_in(contacts.c.id, chunk))
            part = _apply(session, segment, wanted, chunk, emit=True, now=now)
            result.entered.extend(part.entered)
    if mode == "remove":
        for start in range(0, len(ids), CHUNK):
            chunk = ids[start : start + CHUNK]
            nobody = select(contacts.c.id).where(false())
            part = _apply(session, segment, nobody, chunk, emit=True, now=now)
            result.left.extend(part.left)
    if mode == "replace":
        keep = set(ids)
        current = session.scalars(
            select(memberships.c.contact_id).where(memberships.c.segment_id == segment.id)
        ).all()
        gone = sorted(c for c in current if c not in keep)
        for start in range(0, len(gone), CHUNK):
            chunk = gone[start : start + CHUNK]
            nobody = select(contacts.c.id).where(false())
            part = _apply(session, segment, nobody, chunk, emit=True, now=now)
            result.left.extend(part.left)
    segment.updated_at = now
    changed = result.entered + result.left
    if changed:
        # Dynamic segments may refer to this list.
        refresh_contacts(session, changed)
    return result


def member_ids(session: Session, segment_id: int) -> Select[int]:
    """The stored members of a segment (as of its last refresh, for dynamic ones)."""
    return select(memberships.c.contact_id).where(memberships.c.segment_id == segment_id)


def audience_ids(
    session: Session, include: Sequence[int], exclude: Sequence[int] = ()
) -> Select[int]:
    """Contacts in any of the ``include`` segments and in none of ``exclude`` (campaign
    audiences): dynamic segments evaluated live, static lists by their members."""
    if not include:
        raise Conflict("an audience needs at least one segment")
    tree: dict[str, Any] = {"conditions": [{"any": [{"segment": s} for s in include]}]}
    if exclude:
        tree["conditions"].append({"not": {"any": [{"segment": s} for s in exclude]}})
    return matching_ids(session, tree)
