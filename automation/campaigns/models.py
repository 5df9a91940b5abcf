from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Boolean, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from automation.db import Base, BigId, JSONDoc, UTCDateTime
from automation.enums import str_enum


class CampaignStatus(enum.StrEnum):
    DRAFT = "draft"
    SCHEDULED = "scheduled"  # waits for next_run_at to freeze the audience and queue
    TESTING = "testing"  # A/B test messages queued; the winner is decided at next_run_at
    AWAITING_WINNER = "awaiting_winner"  # not significant, fallback "manual": a person picks
    SENDING = "sending"  # every message queued; finished when all have an outcome
    PAUSED = "paused"
    FINISHED = "finished"
    CANCELLED = "cancelled"


class ScheduleMode(enum.StrEnum):
    NOW = "now"
    AT = "at"  # one moment for everybody
    LOCAL = "local"  # a local date and time in each recipient's zone


class WinnerMetric(enum.StrEnum):
    OPEN_RATE = "open_rate"  # human unique opens / delivered
    CLICK_RATE = "click_rate"  # human unique clicks / delivered
    CLICK_TO_OPEN = "click_to_open"  # human unique clickers / human unique openers


class WinnerMethod(enum.StrEnum):
    Z_TEST = "z_test"  # pooled two-proportion z-test of the leader against the runner-up
    BAYESIAN = "bayesian"  # probability to beat control from Beta posteriors (exact)


class WinnerFallback(enum.StrEnum):
    LEADER = "leader"  # not significant: send the leader anyway
    CONTROL = "control"  # not significant: send variant A
    MANUAL = "manual"  # not significant: wait for a person to pick


class Campaign(Base):
    __tablename__ = "campaigns"
    __table_args__ = (Index("ix_campaigns_due", "status", "next_run_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    status: Mapped[CampaignStatus] = mapped_column(
        str_enum(CampaignStatus), default=CampaignStatus.DRAFT
    )
    paused_from: Mapped[CampaignStatus | None] = mapped_column(str_enum(CampaignStatus))
    include_segment_ids: Mapped[list[int]] = mapped_column(JSONDoc, default=list)
    exclude_segment_ids: Mapped[list[int]] = mapped_column(JSONDoc, default=list)
    schedule_mode: Mapped[ScheduleMode] = mapped_column(
        str_enum(ScheduleMode), default=ScheduleMode.NOW
    )
    send_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    local_date: Mapped[str | None] = mapped_column(String(10))  # YYYY-MM-DD
    local_time: Mapped[str | None] = mapped_column(String(5))  # HH:MM
    fallback_time_zone: Mapped[str] = mapped_column(String(64), default="UTC")
    quiet_start: Mapped[int | None] = mapped_column(Integer)  # local hour, 0-23
    quiet_end: Mapped[int | None] = mapped_column(Integer)
    # A/B test (two or more variants): the share of the audience that gets the test.
    test_percent: Mapped[int] = mapped_column(Integer, default=0)
    test_minutes: Mapped[int] = mapped_column(Integer, default=0)
    winner_metric: Mapped[WinnerMetric] = mapped_column(
        str_enum(WinnerMetric), default=WinnerMetric.OPEN_RATE
    )
    winner_method: Mapped[WinnerMethod] = mapped_column(
        str_enum(WinnerMethod), default=WinnerMethod.Z_TEST
    )
    min_sample: Mapped[int] = mapped_column(Integer, default=100)
    confidence: Mapped[float] = mapped_column(default=0.95)
    fallback: Mapped[WinnerFallback] = mapped_column(
        str_enum(WinnerFallback), default=WinnerFallback.LEADER
    )
    # UTM parameters the click redirect appends to this campaign's links (a link's own
    # query parameters win): {"utm_source": "nurture", "utm_campaign": "spring", …}.
    utm: Mapped[dict[str, str]] = mapped_column(JSONDoc, default=dict)
    winner_variant_id: Mapped[int | None] = mapped_column(Integer)
    winner_source: Mapped[str | None] = mapped_column(String(20))  # test|fallback|manual
    test_result: Mapped[dict[str, Any] | None] = mapped_column(JSONDoc)
    next_run_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    audience_count: Mapped[int | None] = mapped_column(Integer)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class CampaignVariant(Base):
    __tablename__ = "campaign_variants"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    campaign_id: Mapped[int] = mapped_column(
        ForeignKey("campaigns.id", ondelete="CASCADE"), index=True
    )
    position: Mapped[int] = mapped_column(Integer)  # 0 = A, the control
    name: Mapped[str] = mapped_column(String(20))
    template_version_id: Mapped[int] = mapped_column(
        ForeignKey("template_versions.id", ondelete="RESTRICT")
    )
    # The variant's own subject / preheader (rendered at send, never a template version)
    # and sender; None: the version's.
    override_id: Mapped[int | None] = mapped_column(
        ForeignKey("version_overrides.id", ondelete="RESTRICT")
    )
    sender_identity_id: Mapped[int | None] = mapped_column(
        ForeignKey("sender_identities.id", ondelete="RESTRICT")
    )


class CampaignRecipient(Base):
    """The audience frozen when the campaign starts: who, which variant (None: the rest,
    waiting for the winner), whether in the test group, and when to send."""

    __tablename__ = "campaign_recipients"

    campaign_id: Mapped[int] = mapped_column(
        ForeignKey("campaigns.id", ondelete="CASCADE"), primary_key=True
    )
    contact_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("contacts.id", ondelete="CASCADE"), primary_key=True
    )
    bucket: Mapped[int] = mapped_column(BigInteger)
    test: Mapped[bool] = mapped_column(Boolean, default=False)
    variant_id: Mapped[int | None] = mapped_column(Integer)
    send_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


__all__ = [
    "Campaign",
    "CampaignRecipient",
    "CampaignStatus",
    "CampaignVariant",
    "ScheduleMode",
    "WinnerFallback",
    "WinnerMethod",
    "WinnerMetric",
]
