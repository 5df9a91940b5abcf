"""The sending policy an admin edits in the UI: the global frequency cap, the sunset policy,
the engagement score's half-life and the bounce and complaint thresholds.

The environment (NURTURE_FREQUENCY_CAP …) gives the defaults; a value saved here wins. It
lives in the database, not in each process's settings, so every sender, tracking worker
and scheduler applies a change on its next batch without a restart (docs/architecture.md: the
database is the source of truth). Reading it is one primary-key lookup per batch.

The same row holds whether the complaint guard paused the *default sender*. That sender
(NURTURE_DEFAULT_SENDER, used by every message whose template names no sender identity:
``messages.sender_identity_id IS NULL``) has no ``sender_identities`` row to carry
``paused_at``, and the workspace has exactly one of it, as it has one policy row. It is
state the guard and an admin's Resume set, not policy: saving the policy never touches
it."""

from __future__ import annotations

from dataclasses import fields
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Float, Integer, String
from sqlalchemy.orm import Mapped, Session, mapped_column

from automation import clock
from automation.config import Settings
from automation.db import Base, UTCDateTime

ROW_ID = 1  # one row: the workspace's policy


class SendingPolicy(Base):
    """Saved policy values; NULL means "as the environment says"."""

    __tablename__ = "sending_policy"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    frequency_cap: Mapped[int | None] = mapped_column(Integer)
    frequency_cap_days: Mapped[int | None] = mapped_column(Integer)
    frequency_cap_action: Mapped[str | None] = mapped_column(String(10))
    sunset_sends: Mapped[int | None] = mapped_column(Integer)
    sunset_days: Mapped[int | None] = mapped_column(Integer)
    engagement_half_life_days: Mapped[float | None] = mapped_column(Float)
    soft_bounce_limit: Mapped[int | None] = mapped_column(Integer)
    soft_bounce_days: Mapped[int | None] = mapped_column(Integer)
    complaint_min_count: Mapped[int | None] = mapped_column(Integer)
    complaint_window_days: Mapped[int | None] = mapped_column(Integer)
    # The default sender's pause (not policy: see the module docstring).
    default_sender_paused_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    default_sender_paused_reason: Mapped[str | None] = mapped_column(String(200))
    default_sender_resumed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    updated_by_id: Mapped[int | None] = mapped_column(Integer)


class PolicyIn(BaseModel):
    """Every field optional: ``null`` (or leaving it out) returns to the environment's value."""

    model_config = ConfigDict(extra="forbid")
    frequency_cap: int | None = Field(
        None, ge=0, le=1000, description="Marketing emails per contact per window; 0 = no cap"
    )
    frequency_cap_days: int | None = Field(None, ge=1, le=365)
    frequency_cap_action: Literal["defer", "skip"] | None = Field(
        None, description="Over the cap: defer until a slot frees, or skip the email"
    )
    sunset_sends: int | None = Field(
        None, ge=0, le=10000, description="Inactive after this many sends without engagement"
    )
    sunset_days: int | None = Field(
        None, ge=0, le=3650, description="Inactive after this many days without engagement"
    )
    engagement_half_life_days: float | None = Field(None, gt=0, le=3650)
    soft_bounce_limit: int | None = Field(
        None, ge=1, le=100, description="Soft bounces within the window that suppress an address"
    )
    soft_bounce_days: int | None = Field(None, ge=1, le=365)
    complaint_min_count: int | None = Field(
        None,
        ge=1,
        le=10000,
        description="Complaints a sender needs, besides a rate over 0.3 %, to be paused",
    )
    complaint_window_days: int | None = Field(
        None, ge=1, le=365, description="Days of sent mail the complaint rate is computed over"
    )


class PolicyOut(BaseModel):
    """The values in force, and which of them were saved here (the rest come from the
    environment)."""

    frequency_cap: int
    frequency_cap_days: int
    frequency_cap_action: str
    sunset_sends: int
    sunset_days: int
    engagement_half_life_days: float
    soft_bounce_limit: int
    soft_bounce_days: int
    complaint_min_count: int
    complaint_window_days: int
    saved: list[str]
    updated_at: datetime | None


POLICY_FIELDS = tuple(PolicyIn.model_fields)
assert set(POLICY_FIELDS) <= {f.name for f in fields(Settings)}


def _saved(session: Session) -> dict[str, Any]:
    row = session.get(SendingPolicy, ROW_ID)
    if row is None:
        return {}
    values = {name: getattr(row, name) for name in POLICY_FIELDS}
    return {name: value for name, value in values.items() if value is not None}


def effective_settings(session: Session, settings: Settings) -> Settings:
    """``settings`` with the saved policy applied."""
    saved = _saved(session)
    return settings.with_overrides(**saved) if saved else settings


def get_policy(session: Session, settings: Settings) -> PolicyOut:
    saved = _saved(session)
    current = effective_settings(session, settings)
    row = session.get(SendingPolicy, ROW_ID)
    return PolicyOut(
        **{name: getattr(current, name) for name in POLICY_FIELDS},
        saved=sorted(saved),
        updated_at=row.updated_at if row else None,
    )


def save_policy(
    session: Session, data: PolicyIn, settings: Settings, *, user_id: int | None = None
) -> PolicyOut:
    """Replace the saved policy with ``data`` (fields left empty follow the environment)."""
    row = _row(session)
    for name in POLICY_FIELDS:
        setattr(row, name, getattr(data, name))
    row.updated_at = clock.now()
    row.updated_by_id = user_id
    session.flush()
    return get_policy(session, settings)


def _row(session: Session) -> SendingPolicy:
    row = session.get(SendingPolicy, ROW_ID)
    if row is None:
        row = SendingPolicy(id=ROW_ID)
        session.add(row)
    return row


def default_sender_paused_at(session: Session) -> datetime | None:
    """When the complaint guard paused the default sender, or None while it may send."""
    row = session.get(SendingPolicy, ROW_ID)
    return row.default_sender_paused_at if row is not None else None


def pause_default_sender(session: Session, reason: str) -> bool:
    """Pause the default sender; False if it was paused already."""
    row = _row(session)
    if row.default_sender_paused_at is not None:
        return False
    row.default_sender_paused_at = clock.now()
    row.default_sender_paused_reason = reason[:200]
    session.flush()
    return True


def resume_default_sender(session: Session) -> None:
    row = session.get(SendingPolicy, ROW_ID)
    if row is not None and row.default_sender_paused_at is not None:
        row.default_sender_paused_at = None
        row.default_sender_paused_reason = None
        row.default_sender_resumed_at = clock.now()
        session.flush()


def default_sender_resumed_at(session: Session) -> datetime | None:
    """When an operator last resumed the default sender (the complaint window's start)."""
    row = session.get(SendingPolicy, ROW_ID)
    return row.default_sender_resumed_at if row is not None else None
