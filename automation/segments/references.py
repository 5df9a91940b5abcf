"""What a dynamic segment refers to (other segments, custom fields), for the guards that
refuse a delete: a segment naming a deleted one, or an undeclared field, can no longer be
evaluated. Installed into ``automation.references`` by the wiring module."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from automation.contacts.service import names_field
from automation.references import Finder, Target, User
from automation.segments.models import Segment, SegmentKind
from automation.segments.schema import parse_filter, referenced_segments


def _dynamic(session: Session) -> list[Segment]:
    rows = session.scalars(
        select(Segment).where(Segment.kind == SegmentKind.DYNAMIC).order_by(Segment.name)
    )
    return [segment for segment in rows if segment.definition is not None]


def _using_segment(session: Session, segment_id: int) -> list[User]:
    return [
        User("segment", other.name)
        for other in _dynamic(session)
        if other.id != segment_id
        and segment_id in referenced_segments(parse_filter(other.definition))
    ]


def _using_field(session: Session, name: str) -> list[User]:
    return [User("segment", s.name) for s in _dynamic(session) if names_field(s.definition, name)]


FINDERS: dict[Target, Finder] = {
    Target.SEGMENT: _using_segment,
    Target.CUSTOM_FIELD: _using_field,
}
