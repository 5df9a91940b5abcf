"""Segments (a saved filter tree, or a static list) and their materialised membership."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from automation.contacts.models import Contact
from automation.db import Base, BigId, JSONDoc, UTCDateTime, postgres_only
from automation.enums import str_enum


class SegmentKind(enum.StrEnum):
    DYNAMIC = "dynamic"  # members are the contacts matching `definition`
    STATIC = "static"  # members are added and removed explicitly (lists, CSV uploads)


class Segment(Base):
    __tablename__ = "segments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    kind: Mapped[SegmentKind] = mapped_column(str_enum(SegmentKind))
    # {"conditions": [...]}: the filter tree of docs/segments.md; None for static lists.
    definition: Mapped[dict[str, Any] | None] = mapped_column(JSONDoc)
    member_count: Mapped[int] = mapped_column(Integer, default=0)
    refreshed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class SegmentMembership(Base):
    """One contact in one segment since ``entered_at`` (the set "entered segment" triggers
    and campaign audiences read)."""

    __tablename__ = "segment_memberships"
    __table_args__ = (Index("ix_segment_memberships_contact_id", "contact_id"),)

    segment_id: Mapped[int] = mapped_column(
        ForeignKey("segments.id", ondelete="CASCADE"), primary_key=True
    )
    contact_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("contacts.id", ondelete="CASCADE"), primary_key=True
    )
    entered_at: Mapped[datetime] = mapped_column(UTCDateTime)


# Attribute equality (``attributes @> '{"plan": "pro"}'``, what the compiler emits for
# equals / in on custom fields) is served for every field at once by this GIN index.
postgres_only(
    Index(
        "ix_contacts_attributes_gin",
        Contact.__table__.c.attributes,
        postgresql_using="gin",
        postgresql_ops={"attributes": "jsonb_path_ops"},
    )
)

__all__ = ["Segment", "SegmentKind", "SegmentMembership"]
