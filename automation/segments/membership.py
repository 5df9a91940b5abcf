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
    or_,
    select,
    true,
)
from sqlalchemy.orm import Session

from automation import clock
from automation.db import JSONDoc, UTCDateTime, dialect_insert
from automation.errors import Conflict, NotFound
from automation.reactions import IngestedEvent, react_to_events
from automation.segments.catalog import (
    Catalog,
    check_filter,
)
from automation.segments.compiler import contacts, events, matching_ids, memberships
from automation.segments.context import load_catalog, load_segments
from automation.segments.dialects import Sql
from automation.segments.evaluator import needed_events
from automation.segments.models import Segment, SegmentKind
from automation.segments.schema import (
    FieldCondition,
    Filter,
    SegmentCondition,
    TagCondition,
    walk,
)

ENTERED = "segment.entered"
LEFT = "segment.left"
EVENT_SOURCE = "segment"
CHUNK = 20_000  # contacts per incremental statement (one bound array either way)


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
    """Make the stored members of ``segment`` (within ``among_ids``) equal ``matching``.

    Two steps. First one read-only query finds the difference: the segment is evaluated
    once, and PostgreSQL may scan contacts in parallel (it never does inside a statement
    that writes). Then only the changed ids are written: deleted, inserted, and recorded
    as events, each in one statement per chunk. The segment row is locked by the caller,
    so no other refresh of it runs in between.
    """
    sql = Sql(session.get_bind().dialect.name)
    entered_ids, left_ids = _difference(session, sql, segment.id, matching, among_ids)
    result = RefreshResult(segment.id)
    for chunk in _chunks(left_ids):
        result.left.extend(
            session.scalars(
                delete(memberships)
                .where(memberships.c.segment_id == segment.id)
                .where(sql.ids_in(memberships.c.contact_id, chunk))
                .returning(memberships.c.contact_id)
            )
        )
    for chunk in _chunks(entered_ids):
        ids = sql.id_rows(chunk)
        result.entered.extend(
            session.scalars(
                dialect_insert(session, memberships)
                .from_select(
                    ["segment_id", "contact_id", "entered_at"],
                    # (The WHERE lets SQLite parse ON CONFLICT after INSERT ... SELECT.)
                    select(literal(segment.id), ids.c.id, literal(now, UTCDateTime)).where(true()),
                )
                .on_conflict_do_nothing()
                .returning(memberships.c.contact_id)
            )
        )
    segment.member_count += len(result.entered) - len(result.left)
    if emit and (result.entered or result.left):
        properties = {"segment_id": segment.id, "segment": segment.name}
        recorded = _record_events(session, sql, result, properties, now)
        react_to_events(session, recorded)
    return result


def _chunks(ids: Sequence[int], size: int = 50_000) -> list[Sequence[int]]:
    return [ids[i : i + size] for i in range(0, len(ids), size)]


def _difference(
    session: Session,
    sql: Sql,
    segment_id: int,
    matching: Select[int],
    among_ids: Sequence[int] | None,
) -> tuple[list[int], list[int]]:
    """(ids that match but are not stored, ids stored that no longer match)."""
    found = matching.subquery("matching")
    stored = select(memberships.c.contact_id).where(memberships.c.segment_id == segment_id)
    if among_ids is not None:
        stored = stored.where(sql.ids_in(memberships.c.contact_id, among_ids))
    if sql.pg:
        # One hash full join of the two sets; only the rows present on one side are kept.
        members = stored.subquery("members")
        rows = session.execute(
            select(func.coalesce(found.c.id, members.c.contact_id), found.c.id.is_not(None))
            .select_from(found.join(members, members.c.contact_id == found.c.id, full=True))
            .where(or_(found.c.id.is_(None), members.c.contact_id.is_(None)))
        ).all()
        return (
            sorted(cid for cid, is_new in rows if is_new),
            sorted(cid for cid, is_new in rows if not is_new),
        )
    # SQLite before 3.39 has no FULL JOIN: two anti-joins.
    existing = memberships.alias("existing")
    entered = session.scalars(
        select(found.c.id).where(
            ~exists(
                select(1).where(
                    existing.c.segment_id == segment_id, existing.c.contact_id == found.c.id
                )
            )
        )
    ).all()
    left = session.scalars(stored.where(memberships.c.contact_id.not_in(select(found.c.id)))).all()
    return sorted(entered), sorted(left)


def _record_events(
    session: Session,
    sql: Sql,
    result: RefreshResult,
    properties: dict[str, Any],
    now: datetime,
) -> list[IngestedEvent]:
    """One segment.entered / segment.left event per change, inserted set-wise."""
    recorded: list[IngestedEvent] = []
    for name, contact_ids in ((ENTERED, result.entered), (LEFT, result.left)):
        for chunk in _chunks(sorted(contact_ids)):
            ids = sql.id_rows(chunk)
            rows = session.execute(
                insert(events)
                .from_select(
                    ["contact_id", "name", "properties", "occurred_at", "received_at", "source"],
                    select(
                        ids.c.id,
                        literal(name),
                        literal(properties, JSONDoc),
                        literal(now, UTCDateTime),
                        literal(now, UTCDateTime),
                        literal(EVENT_SOURCE),
                    ),
                )
                .returning(events.c.id, events.c.contact_id)
            )
            recorded.extend(
                IngestedEvent(event_id, cid, name, dict(properties), now) for event_id, cid in rows
            )
    return recorded


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
    problems = check_filter(tree, catalog) if tree is not None else []
    if tree is None or problems:
        details = "; ".join(f"{p.path}: {p.message}" for p in problems)
        raise Conflict(
            f"segment {segment.name!r} cannot be evaluated: {details or 'no definition'}"
        )
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
        if tree is None or check_filter(tree, catalog):
            # Its definition names a field or segment deleted since: it cannot be
            # evaluated, and must not fail the ingestion or edit that got us here.
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
