from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from automation.db import Base, BigId, JSONDoc, UTCDateTime
from automation.enums import str_enum

# What a confirmed submission stores (properties ``form_id``, ``form_name``, ...): workflows'
# form trigger listens to it.
SUBMITTED_EVENT = "form.submitted"


class Form(Base):
    """A lead-capture form. ``public_id`` (random) names it in public URLs, never ``id``.

    ``fields``: ``[{"name", "label", "type", "required", "options"}]`` where name is a
    contact field (email, first_name, last_name) or a declared custom field."""

    __tablename__ = "forms"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    public_id: Mapped[str] = mapped_column(String(32), unique=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    fields: Mapped[list[dict[str, Any]]] = mapped_column(JSONDoc, default=list)
    consent_text: Mapped[str] = mapped_column(Text, default="")
    double_opt_in: Mapped[bool] = mapped_column(Boolean, default=False)
    tags: Mapped[list[str]] = mapped_column(JSONDoc, default=list)
    lists: Mapped[list[int]] = mapped_column(JSONDoc, default=list)  # static segment ids
    success_message: Mapped[str] = mapped_column(Text, default="")
    redirect_url: Mapped[str | None] = mapped_column(String(2000))
    # Transactional template of the double opt-in email (uses {{ confirm_url }}); None =
    # the built-in one.
    confirmation_template_id: Mapped[int | None] = mapped_column(
        ForeignKey("templates.id", ondelete="RESTRICT")
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class SubmissionStatus(enum.StrEnum):
    PENDING = "pending"  # double opt-in: waiting for the confirmation link
    CONFIRMED = "confirmed"


class FormSubmission(Base):
    __tablename__ = "form_submissions"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    form_id: Mapped[int] = mapped_column(ForeignKey("forms.id", ondelete="CASCADE"), index=True)
    contact_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("contacts.id", ondelete="CASCADE"), index=True
    )
    data: Mapped[dict[str, Any]] = mapped_column(JSONDoc, default=dict)
    status: Mapped[SubmissionStatus] = mapped_column(str_enum(SubmissionStatus))
    ip: Mapped[str | None] = mapped_column(String(45))
    visitor_id: Mapped[str | None] = mapped_column(String(64))
    # The confirmation email (double opt-in); its CONFIRM token leads back here.
    message_id: Mapped[int | None] = mapped_column(BigId, index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    confirmed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


__all__ = ["SUBMITTED_EVENT", "Form", "FormSubmission", "SubmissionStatus"]
