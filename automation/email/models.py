from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from automation.db import Base, BigId, UTCDateTime
from automation.enums import str_enum


class SuppressionReason(enum.StrEnum):
    UNSUBSCRIBED = "unsubscribed"
    BOUNCED = "bounced"
    COMPLAINED = "complained"
    MANUAL = "manual"
    ERASED = "erased"  # GDPR erasure: only the hash remains, so a re-import is not mailed


class SenderIdentity(Base):
    __tablename__ = "sender_identities"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    from_name: Mapped[str] = mapped_column(String(100))
    from_email: Mapped[str] = mapped_column(String(254))
    reply_to: Mapped[str | None] = mapped_column(String(254))
    max_per_minute: Mapped[int] = mapped_column(Integer, default=600)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Suppression(Base):
    """An address never to be mailed. Keyed by a hash so erased addresses can stay listed."""

    __tablename__ = "suppressions"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    email_hash: Mapped[str] = mapped_column(String(64), unique=True)
    email: Mapped[str | None] = mapped_column(String(254))
    reason: Mapped[SuppressionReason] = mapped_column(str_enum(SuppressionReason))
    source: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
