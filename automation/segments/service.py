"""Segment CRUD, previews (count, sample, explain) and member import/export.
Functions take a session and never commit."""

from __future__ import annotations

import codecs
import csv
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from automation import clock
from automation.contacts.models import Contact
from automation.errors import Conflict, FieldError, InvalidInput, NotFound
from automation.references import Target, refuse_if_used
from automation.segments.compiler import contacts, matching_ids, memberships
from automation.segments.context import load_catalog, validate_filter
from automation.segments.dialects import Sql
from automation.segments.evaluator import Evaluator, load_facts
from automation.segments.membership import (
    RefreshResult,
    add_members,
    remove_members,
    replace_members,
)
from automation.segments.models import Segment, SegmentKind
from automation.segments.schema import (
    Filter,
    SegmentCondition,
    parse_filter,
)
from automation.segments.shapes import (
    ExplainNode,
    ExplainOut,
    MemberMode,
    SegmentIn,
    SegmentPatch,
)


def get_segment(session: Session, segment_id: int) -> Segment:
    segment = session.get(Segment, segment_id)
    if segment is None:
        raise NotFound(f"segment {segment_id} not found")
    return segment


def list_segments(session: Session) -> list[Segment]:
    return list(session.scalars(select(Segment).order_by(Segment.name)))


def _ensure_name_free(session: Session, name: str, exclude_id: int | None = None) -> None:
    query = select(Segment.id).where(Segment.name == name)
    if exclude_id is not None:
        query = query.where(Segment.id != exclude_id)
    if session.scalar(query) is not None:
        raise Conflict(f"a segment named {name!r} already exists")


def create_segment(session: Session, data: SegmentIn) -> Segment:
    """A new dynamic segment (with conditions) or static list (without). Its members are
    materialised by the first refresh, which the caller queues after commit."""
    definition = None
    if data.kind is SegmentKind.DYNAMIC:
        if data.conditions is None:
            raise InvalidInput(FieldError("conditions", "a dynamic segment needs conditions"))
        tree, _ = validate_filter(session, Filter(conditions=data.conditions))
        definition = tree.as_json()
    elif data.conditions is not None:
        raise InvalidInput(
            FieldError("conditions", "a static list has no conditions; add members instead")
        )
    _ensure_name_free(session, data.name)
    now = clock.now()
    segment = Segment(
        name=data.name,
        description=data.description,
        kind=data.kind,
        definition=definition,
        member_count=0,
        # A static list is complete from the start; a dynamic segment is not yet refreshed.
        refreshed_at=now if data.kind is SegmentKind.STATIC else None,
        created_at=now,
        updated_at=now,
    )
    session.add(segment)
    session.flush()
    return segment


def update_segment(session: Session, segment_id: int, patch: SegmentPatch) -> tuple[Segment, bool]:
    """Apply a patch; True when the definition changed (the caller queues a refresh)."""
    segment = get_segment(session, segment_id)
    changed = False
    if patch.name is not None and patch.name != segment.name:
        _ensure_name_free(session, patch.name, exclude_id=segment.id)
        segment.name = patch.name
    if patch.description is not None:
        segment.description = patch.description
    if patch.conditions is not None:
        if segment.kind is SegmentKind.STATIC:
            raise InvalidInput(FieldError("conditions", "a static list has no conditions"))
        tree, _ = validate_filter(
            session, Filter(conditions=patch.conditions), segment_id=segment.id
        )
        definition = tree.as_json()
        changed = definition != segment.definition
        segment.definition = definition
    segment.updated_at = clock.now()
    session.flush()
    return segment, changed


def delete_segment(session: Session, segment_id: int) -> None:
    """Delete a segment; refused while another segment, a live workflow (its trigger, a
    condition, a list step) or a campaign not yet sent names it: they would stop or fail
    without a word."""
    segment = get_segment(session, segment_id)
    refuse_if_used(session, Target.SEGMENT, segment.id, f"segment {segment.name!r}")
    session.delete(segment)
    session.flush()


def segment_filter(segment: Segment) -> Filter:
    """The tree deciding membership: the definition, or "member of this list"."""
    if segment.kind is SegmentKind.DYNAMIC and segment.definition is not None:
        return parse_filter(segment.definition)
    return Filter(conditions=(SegmentCondition(segment=segment.id),))


# --- previews -----------------------------------------------------------------------------


def sample_contacts(session: Session, tree: Filter, size: int) -> list[Contact]:
    """The ``size`` most recently created matching contacts (a preview for the builder)."""
    ids = matching_ids(session, tree).order_by(contacts.c.id.desc()).limit(size)
    wanted = list(session.scalars(ids))
    if not wanted:
        return []
    found = {c.id: c for c in session.scalars(select(Contact).where(Contact.id.in_(wanted)))}
    return [found[i] for i in wanted if i in found]


def explain(session: Session, tree: Filter, contact_id: int) -> ExplainOut:
    """Why a contact is (or is not) matched: each node's result and what it observed."""
    catalog = load_catalog(session, tree)
    facts = load_facts(session, contact_id, tree, catalog)
    outcome = Evaluator(catalog, facts, clock.now()).tree(tree)
    return ExplainOut(
        contact_id=contact_id,
        matches=outcome.result,
        conditions=[ExplainNode.model_validate(c.as_dict()) for c in outcome.children],
    )


# --- members ----------------------------------------------------------------------------


@dataclass
class MemberEdit:
    result: RefreshResult
    member_count: int
    unknown: list[str] = field(default_factory=list)
    unknown_count: int = 0


def resolve_contacts(
    session: Session, contact_ids: Sequence[int], emails: Sequence[str]
) -> tuple[list[int], list[str]]:
    """Contact ids for the given ids and emails, and the inputs matching no contact."""
    sql = Sql(session.get_bind().dialect.name)
    wanted_ids = sorted(set(contact_ids))
    found: set[int] = set()
    for start in range(0, len(wanted_ids), 5000):
        chunk = wanted_ids[start : start + 5000]
        found.update(session.scalars(select(contacts.c.id).where(sql.ids_in(contacts.c.id, chunk))))
    unknown = [str(i) for i in wanted_ids if i not in found]
    normalised = sorted({e.strip().lower() for e in emails if e.strip()})
    by_email: dict[str, int] = {}
    for start in range(0, len(normalised), 1000):
        batch = normalised[start : start + 1000]
        rows = session.execute(
            select(contacts.c.email, contacts.c.id).where(contacts.c.email.in_(batch))
        )
        by_email.update((email, contact_id) for email, contact_id in rows)
    unknown.extend(e for e in normalised if e not in by_email)
    return sorted(found | set(by_email.values())), unknown


def edit_members(
    session: Session,
    segment_id: int,
    mode: MemberMode,
    contact_ids: Sequence[int] = (),
    emails: Sequence[str] = (),
) -> MemberEdit:
    """Add, remove or replace the members of a static list, by contact id and/or email."""
    segment = get_segment(session, segment_id)
    if segment.kind is not SegmentKind.STATIC:
        raise Conflict(f"{segment.name!r} is dynamic: its members follow its conditions")
    ids, unknown = resolve_contacts(session, contact_ids, emails)
    action = {
        MemberMode.ADD: add_members,
        MemberMode.REMOVE: remove_members,
        MemberMode.REPLACE: replace_members,
    }[mode]
    result = action(session, segment.id, ids)
    return MemberEdit(result, segment.member_count, unknown[:100], len(unknown))


def read_member_csv(stream: IO[bytes], encoding: str = "utf-8-sig") -> tuple[list[int], list[str]]:
    """Contact ids and emails from a CSV whose header names an ``email`` and/or ``id``
    (or ``contact_id``) column; other columns are ignored."""
    try:
        reader = csv.reader(codecs.iterdecode(stream, encoding))
        header = [h.strip().lower() for h in next(reader, [])]
    except (UnicodeDecodeError, csv.Error) as exc:
        raise InvalidInput(FieldError("file", f"cannot read the CSV: {exc}")) from None
    email_col = header.index("email") if "email" in header else None
    id_col = next((header.index(n) for n in ("contact_id", "id") if n in header), None)
    if email_col is None and id_col is None:
        raise InvalidInput(FieldError("file", "the header needs an email or id column"))
    ids: list[int] = []
    emails: list[str] = []
    try:
        for line, row in enumerate(reader, start=2):
            if email_col is not None and email_col < len(row) and row[email_col].strip():
                emails.append(row[email_col])
            elif id_col is not None and id_col < len(row) and row[id_col].strip():
                try:
                    ids.append(int(row[id_col]))
                except ValueError:
                    raise InvalidInput(
                        FieldError(f"file.line[{line}]", f"not a contact id: {row[id_col]!r}")
                    ) from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise InvalidInput(FieldError("file", f"cannot read the CSV: {exc}")) from None
    return ids, emails


EXPORT_COLUMNS = (
    "id",
    "email",
    "first_name",
    "last_name",
    "status",
    "lifecycle_stage",
    "entered_at",
)


def export_rows(session: Session, segment: Segment) -> Iterator[tuple[Any, ...]]:
    """Members as CSV rows, streamed: live matches of a dynamic segment (with the time each
    entered, once materialised), the members of a static list."""
    entered = memberships.alias("entered")
    columns = [
        contacts.c.id,
        contacts.c.email,
        contacts.c.first_name,
        contacts.c.last_name,
        contacts.c.status,
        contacts.c.lifecycle_stage,
        entered.c.entered_at,
    ]
    ids = matching_ids(session, segment_filter(segment)).subquery()
    query = (
        select(*columns)
        .join(ids, ids.c.id == contacts.c.id)
        .outerjoin(
            entered, (entered.c.segment_id == segment.id) & (entered.c.contact_id == contacts.c.id)
        )
    )
    rows = session.execute(query.order_by(contacts.c.id).execution_options(yield_per=2000))
    for row in rows:
        yield tuple(
            getattr(v, "value", v) if not hasattr(v, "isoformat") else v.isoformat() for v in row
        )


def missing_segments(
    session: Session, refs: Sequence[tuple[int, str]], *, static: bool = False
) -> list[FieldError]:
    """Errors for segment ids (``static``: static list ids) that do not exist."""
    if not refs:
        return []
    rows: dict[int, Any] = dict(
        session.execute(
            select(Segment.id, Segment.kind).where(Segment.id.in_({i for i, _ in refs}))
        ).all()
    )
    errors = []
    for segment_id, path in refs:
        if segment_id not in rows:
            errors.append(FieldError(path, f"no {'list' if static else 'segment'} {segment_id}"))
        elif static and rows[segment_id] is not SegmentKind.STATIC:
            errors.append(FieldError(path, f"segment {segment_id} is not a static list"))
    return errors
