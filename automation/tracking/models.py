"""Site tracking: the origins allowed to post events, visitors and their anonymous events."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from automation.db import Base, BigId, JSONDoc, UTCDateTime


class SiteOrigin(Base):
    """A website origin (scheme://host[:port]) allowed to embed the snippet and forms:
    CORS answers only these, and the click redirect identifies visitors only to these."""

    __tablename__ = "site_origins"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    origin: Mapped[str] = mapped_column(String(255), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class SiteVisitor(Base):
    """A browser (random visitor id made by the snippet) once it is known to be a contact."""

    __tablename__ = "site_visitors"

    visitor_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    contact_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("contacts.id", ondelete="CASCADE"), index=True
    )
    identified_at: Mapped[datetime] = mapped_column(UTCDateTime)
    source: Mapped[str] = mapped_column(String(32))  # email_link | identify | form


class AnonymousEvent(Base):
    """A site event of a visitor not yet known: kept until the visitor identifies, then
    ingested as the contact's event (same idempotency key) and removed."""

    __tablename__ = "anonymous_events"
    __table_args__ = (Index("ix_anonymous_events_visitor", "visitor_id", "occurred_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    visitor_id: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(100))
    properties: Mapped[dict[str, Any]] = mapped_column(JSONDoc, default=dict)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime)
    idempotency_key: Mapped[str] = mapped_column(String(200), unique=True)


class PreferenceTopic(Base):
    """A tag contacts may choose themselves on the preferences page (a newsletter, a
    product line): ticking it adds the tag, unticking removes it; segments use the tag."""

    __tablename__ = "preference_topics"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tag: Mapped[str] = mapped_column(String(100), unique=True)
    label: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


__all__ = ["AnonymousEvent", "PreferenceTopic", "SiteOrigin", "SiteVisitor"]
