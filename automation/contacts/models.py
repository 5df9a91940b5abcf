from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, Integer, LargeBinary, String, Text, func
from sqlalchemy.orm import Mapped, mapped_column, relationship

from automation.db import HOT_UPDATES, Base, BigId, JSONDoc, UTCDateTime
from automation.enums import str_enum


class ContactStatus(enum.StrEnum):
    SUBSCRIBED = "subscribed"
    PENDING = "pending"  # double opt-in not confirmed yet: gets no marketing email
    UNSUBSCRIBED = "unsubscribed"
    BOUNCED = "bounced"
    COMPLAINED = "complained"


class LifecycleStage(enum.StrEnum):
    SUBSCRIBER = "subscriber"
    LEAD = "lead"
    MQL = "mql"
    SQL = "sql"
    OPPORTUNITY = "opportunity"
    CUSTOMER = "customer"


class FieldType(enum.StrEnum):
    TEXT = "text"
    NUMBER = "number"
    DATE = "date"
    BOOLEAN = "boolean"
    CHOICE = "choice"


class IndexStatus(enum.StrEnum):
    """Where the expression index of an indexed custom field stands (docs/segments.md)."""

    NONE = "none"  # not indexed
    BUILDING = "building"  # queued, or CREATE INDEX CONCURRENTLY running
    READY = "ready"  # built and valid: segment conditions compile to its expression
    FAILED = "failed"  # the build failed; index_error says why, nothing is left behind
    UNSUPPORTED = "unsupported"  # SQLite: expression indexes are built on PostgreSQL only


class Contact(Base):
    __tablename__ = "contacts"
    __table_args__ = HOT_UPDATES

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    external_id: Mapped[str | None] = mapped_column(String(128), unique=True)
    first_name: Mapped[str] = mapped_column(String(100), default="")
    last_name: Mapped[str] = mapped_column(String(100), default="")
    status: Mapped[ContactStatus] = mapped_column(
        str_enum(ContactStatus), default=ContactStatus.SUBSCRIBED, index=True
    )
    time_zone: Mapped[str] = mapped_column(String(64), default="UTC")
    lifecycle_stage: Mapped[LifecycleStage] = mapped_column(
        str_enum(LifecycleStage), default=LifecycleStage.SUBSCRIBER, index=True
    )
    score: Mapped[int] = mapped_column(Integer, default=0)
    attributes: Mapped[dict[str, Any]] = mapped_column(JSONDoc, default=dict)
    source: Mapped[str] = mapped_column(String(64), default="")
    confirmed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Engagement, written back in batches by the tracking worker.
    last_open_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_click_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    emails_sent: Mapped[int] = mapped_column(Integer, default=0)
    opens: Mapped[int] = mapped_column(Integer, default=0)
    clicks: Mapped[int] = mapped_column(Integer, default=0)
    engagement_score: Mapped[float] = mapped_column(default=0.0)
    # Set by the sunset policy (no human engagement over N sends or days): left out of
    # marketing sends until the contact engages again.
    inactive_since: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)

    tags: Mapped[list[Tag]] = relationship(
        secondary="contact_tags", order_by="Tag.name", lazy="selectin", viewonly=True
    )


def new_contact_row(email: str, source: str, now: datetime) -> dict[str, Any]:
    """Every column of a contact created in bulk (event ingestion, imports), at its default:
    set-wise inserts pass whole rows, so one list says what a new contact starts with."""
    return {
        "email": email,
        "first_name": "",
        "last_name": "",
        "external_id": None,
        "time_zone": "UTC",
        "status": ContactStatus.SUBSCRIBED,
        "lifecycle_stage": "subscriber",
        "score": 0,
        "attributes": {},
        "source": source,
        "emails_sent": 0,
        "opens": 0,
        "clicks": 0,
        "engagement_score": 0.0,
        "created_at": now,
        "updated_at": now,
    }


class Tag(Base):
    __tablename__ = "tags"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ContactTag(Base):
    __tablename__ = "contact_tags"

    contact_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("contacts.id", ondelete="CASCADE"), primary_key=True
    )
    tag_id: Mapped[int] = mapped_column(
        ForeignKey("tags.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    added_at: Mapped[datetime] = mapped_column(UTCDateTime)


class CustomField(Base):
    """A declared contact attribute: the segment builder and validation read its type."""

    __tablename__ = "custom_fields"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    label: Mapped[str] = mapped_column(String(100))
    type: Mapped[FieldType] = mapped_column(str_enum(FieldType))
    options: Mapped[list[str]] = mapped_column(JSONDoc, default=list)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # Asked for by an admin: PostgreSQL gets an expression index on this attribute, built
    # outside any transaction by automation/segments/field_indexes.py.
    indexed: Mapped[bool] = mapped_column(default=False)
    index_status: Mapped[IndexStatus] = mapped_column(
        str_enum(IndexStatus), default=IndexStatus.NONE
    )
    index_error: Mapped[str | None] = mapped_column(Text)


class Event(Base):
    __tablename__ = "events"
    __table_args__ = (
        # Behavioural segment conditions: "performed X within N days" per contact.
        Index("ix_events_name_contact_occurred", "name", "contact_id", "occurred_at"),
        Index("ix_events_contact_occurred", "contact_id", "occurred_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    contact_id: Mapped[int] = mapped_column(BigId, ForeignKey("contacts.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(100))
    properties: Mapped[dict[str, Any]] = mapped_column(JSONDoc, default=dict)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, server_default=func.now())
    source: Mapped[str] = mapped_column(String(32), default="api")
    idempotency_key: Mapped[str | None] = mapped_column(String(200), unique=True)


class ConsentRecord(Base):
    """Each change of subscription status, with the evidence a regulator asks for."""

    __tablename__ = "consent_records"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    contact_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("contacts.id", ondelete="CASCADE"), index=True
    )
    status_from: Mapped[str | None] = mapped_column(String(24))
    status_to: Mapped[str] = mapped_column(String(24))
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime)
    source: Mapped[str] = mapped_column(String(64))
    ip: Mapped[str | None] = mapped_column(String(45))
    consent_text: Mapped[str | None] = mapped_column(Text)
    # The lawful basis the permission rests on, where one was declared (an import's).
    basis: Mapped[str | None] = mapped_column(String(32))


__all__ = [
    "ConsentRecord",
    "Contact",
    "ContactStatus",
    "ContactTag",
    "CustomField",
    "Event",
    "FieldType",
    "LifecycleStage",
    "Tag",
]


class ImportStatus(enum.StrEnum):
    DRAFT = "draft"  # uploaded in the UI, waiting for the user to confirm the column mapping
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


class ImportBasis(enum.StrEnum):
    """What permission to email an imported list rests on: every import declares one."""

    CONSENT = "consent"  # consent given elsewhere (another tool's signup form, on paper)
    CUSTOMERS = "customers"  # existing customers (the soft opt-in for similar products)
    LEGITIMATE_INTEREST = "legitimate_interest"
    NONE = "none"  # no permission to email: the contacts are kept, not mailed


class ImportJob(Base):
    """An uploaded CSV waiting for or going through import. The file lives in the database
    so that any worker on any machine can run the job."""

    __tablename__ = "import_jobs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    filename: Mapped[str] = mapped_column(String(255))
    content: Mapped[bytes] = mapped_column(LargeBinary, deferred=True)
    mapping: Mapped[dict[str, str]] = mapped_column(JSONDoc, default=dict)
    encoding: Mapped[str] = mapped_column(String(32), default="utf-8")
    status: Mapped[ImportStatus] = mapped_column(
        str_enum(ImportStatus), default=ImportStatus.QUEUED
    )
    rows_estimated: Mapped[int] = mapped_column(Integer, default=0)
    rows_done: Mapped[int] = mapped_column(Integer, default=0)
    report: Mapped[dict[str, Any]] = mapped_column(JSONDoc, default=dict)
    error: Mapped[str | None] = mapped_column(Text)
    # Set when the job starts running and at each committed batch: a running job whose
    # heartbeat is older than the settings' import_stale_seconds has lost its worker.
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Declared with the upload (API) or at the mapping step (UI); None only on a draft.
    permission_basis: Mapped[ImportBasis | None] = mapped_column(str_enum(ImportBasis))
    consent_text: Mapped[str | None] = mapped_column(Text)  # how the permission was obtained
    date_format: Mapped[str | None] = mapped_column(String(32))  # strptime, e.g. %m/%d/%Y
    decimal_comma: Mapped[bool] = mapped_column(default=False)  # 1.234,5
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
