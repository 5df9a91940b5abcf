from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from automation.db import HOT_UPDATES, Base, BigId, JSONDoc, UTCDateTime
from automation.enums import str_enum


class SenderIdentity(Base):
    __tablename__ = "sender_identities"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    from_name: Mapped[str] = mapped_column(String(100))
    from_email: Mapped[str] = mapped_column(String(254))
    reply_to: Mapped[str | None] = mapped_column(String(254))
    max_per_minute: Mapped[int] = mapped_column(Integer, default=600)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # After a temporary SMTP error the relay is asked to slow down: the rate is multiplied
    # by this factor (halved at each deferral) until `throttled_until`.
    throttle_factor: Mapped[float] = mapped_column(default=1.0)
    throttled_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Paused by the complaint-rate guard (tracking) or by hand: the outbox claims nothing
    # for a paused identity until an operator resumes it.
    paused_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    paused_reason: Mapped[str | None] = mapped_column(String(200))
    # The guard's window starts again here: complaints about mail sent before an operator
    # resumed the identity do not pause it again.
    resumed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class TemplateKind(enum.StrEnum):
    MARKETING = "marketing"  # needs an unsubscribe link, counts toward the frequency cap
    TRANSACTIONAL = "transactional"  # receipts, confirmations: exempt from both


class Template(Base):
    __tablename__ = "templates"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    latest_version: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # Deleting archives: sent messages keep pointing at their versions (view in browser,
    # click destinations), so versions are never removed.
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class TemplateVersion(Base):
    """One immutable version: what was saved and what it compiled to. Never updated."""

    __tablename__ = "template_versions"
    __table_args__ = (UniqueConstraint("template_id", "number"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    template_id: Mapped[int] = mapped_column(ForeignKey("templates.id", ondelete="RESTRICT"))
    number: Mapped[int] = mapped_column(Integer)
    kind: Mapped[TemplateKind] = mapped_column(str_enum(TemplateKind))
    sender_identity_id: Mapped[int | None] = mapped_column(
        ForeignKey("sender_identities.id", ondelete="RESTRICT")
    )
    subject: Mapped[str] = mapped_column(Text)
    preheader: Mapped[str] = mapped_column(Text, default="")
    mjml: Mapped[str] = mapped_column(Text)
    # The emails' language (BCP 47, <html lang>); None: the workspace's (NURTURE_EMAIL_LANGUAGE).
    language: Mapped[str | None] = mapped_column(String(35))
    # Compiled once: HTML and text are Jinja sources with tracking placeholders in place.
    html: Mapped[str] = mapped_column(Text)
    text: Mapped[str] = mapped_column(Text)
    links: Mapped[list[dict[str, Any]]] = mapped_column(JSONDoc, default=list)
    html_bytes: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))


class VersionOverride(Base):
    """A subject or preheader that replaces a version's for the messages naming it (a
    campaign variant's): applied when they are rendered, never saved as a version of the
    template, so nothing else (a workflow sending the template's latest) ever sends it.
    Never updated; a changed variant gets a new one."""

    __tablename__ = "version_overrides"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    template_version_id: Mapped[int] = mapped_column(
        ForeignKey("template_versions.id", ondelete="RESTRICT")
    )
    subject: Mapped[str | None] = mapped_column(Text)  # None: the version's
    preheader: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class MessageStatus(enum.StrEnum):
    QUEUED = "queued"
    SENDING = "sending"  # leased by a sender
    SENT = "sent"
    FAILED = "failed"
    SUPPRESSED = "suppressed"
    DEFERRED = "deferred"  # a temporary failure or the frequency cap: retried at next_attempt_at
    UNKNOWN = "unknown"  # the sender vanished mid-send: resent only by hand


# A message in one of these will still go out (or is going out now).


class Message(Base):
    """The outbox and the send log: every email is this row before anything sends it."""

    __tablename__ = "messages"
    __table_args__ = (
        # Claiming: the oldest due rows of one status and sender identity, in index order.
        Index("ix_messages_claim", "status", "sender_identity_id", "next_attempt_at"),
        # Frequency cap and a contact's history.
        Index("ix_messages_contact_sent", "contact_id", "sent_at"),
        Index("ix_messages_lease", "status", "lease_expires_at"),
        # A campaign's messages: its progress (polled by the campaign page), cancel and
        # report read them by campaign, not by status.
        Index("ix_messages_campaign_status", "campaign_id", "status"),
        HOT_UPDATES,
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    dedupe_key: Mapped[str] = mapped_column(String(200), unique=True)
    contact_id: Mapped[int] = mapped_column(BigId, ForeignKey("contacts.id", ondelete="CASCADE"))
    template_version_id: Mapped[int] = mapped_column(
        ForeignKey("template_versions.id", ondelete="RESTRICT"), index=True
    )
    # Copied from the (immutable) version so that claiming needs no join.
    sender_identity_id: Mapped[int | None] = mapped_column(
        ForeignKey("sender_identities.id", ondelete="SET NULL")
    )
    # A campaign variant's subject or preheader, rendered instead of the version's.
    override_id: Mapped[int | None] = mapped_column(
        ForeignKey("version_overrides.id", ondelete="RESTRICT")
    )
    marketing: Mapped[bool] = mapped_column(Boolean, default=True)
    status: Mapped[MessageStatus] = mapped_column(
        str_enum(MessageStatus), default=MessageStatus.QUEUED
    )
    reason: Mapped[str | None] = mapped_column(String(40))
    error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime)
    lease_owner: Mapped[str | None] = mapped_column(String(32))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    smtp_response: Mapped[str | None] = mapped_column(String(500))
    provider_message_id: Mapped[str | None] = mapped_column(String(200))
    # The Message-ID header it went out with (written when it is claimed, before anything
    # is handed to the relay): what `nurture messages reconcile` finds in a relay's log.
    internet_message_id: Mapped[str | None] = mapped_column(String(255))
    # Random, in every tracking token: a token from another database (a restore, a reused
    # id) does not match the row.
    token_nonce: Mapped[int] = mapped_column(BigInteger)
    # Where it came from (tables of other modules; plain ids, no foreign keys).
    campaign_id: Mapped[int | None] = mapped_column(BigInteger)
    campaign_variant_id: Mapped[int | None] = mapped_column(BigInteger)
    enrollment_id: Mapped[int | None] = mapped_column(BigInteger)
    workflow_id: Mapped[int | None] = mapped_column(BigInteger)
    workflow_node_id: Mapped[str | None] = mapped_column(String(64))  # the node's id
    workflow_name: Mapped[str | None] = mapped_column(String(200))
    campaign_name: Mapped[str | None] = mapped_column(String(200))
    # Under the global frequency cap the higher priority goes first (1 to 10; 10 wins).
    priority: Mapped[int] = mapped_column(SmallInteger, default=5, server_default="5")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Engagement, filled by the tracking worker.
    first_open_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_open_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    opens: Mapped[int] = mapped_column(Integer, default=0)
    first_click_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_click_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    clicks: Mapped[int] = mapped_column(Integer, default=0)
    unsubscribed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    complained_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    bounced_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class SendWindow(Base):
    """Messages claimed per sender identity per minute: the rate limit shared by every
    sender process."""

    __tablename__ = "send_windows"

    sender_identity_id: Mapped[int] = mapped_column(
        ForeignKey("sender_identities.id", ondelete="CASCADE"), primary_key=True
    )
    window_start: Mapped[datetime] = mapped_column(UTCDateTime, primary_key=True)
    claimed: Mapped[int] = mapped_column(Integer, default=0)
