"""Campaign input and output models."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from automation.campaigns.models import (
    CampaignStatus,
    ScheduleMode,
    WinnerFallback,
    WinnerMethod,
    WinnerMetric,
)
from automation.db import RowId


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


UTM_KEYS = frozenset({"utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content"})


class VariantIn(Strict):
    """A template version, optionally with a different subject, preheader or sender: kept
    with the variant and applied to its messages only (never a version of the template)."""

    template_version_id: RowId
    subject: str | None = Field(None, max_length=500)
    preheader: str | None = Field(None, max_length=500)
    sender_identity_id: RowId | None = None


class ScheduleIn(Strict):
    mode: ScheduleMode = ScheduleMode.NOW
    send_at: datetime | None = Field(None, description="mode 'at': the moment (UTC)")
    local_date: str | None = Field(None, description="mode 'local': YYYY-MM-DD")
    local_time: str | None = Field(None, description="mode 'local': HH:MM in each zone")
    fallback_time_zone: str = Field("UTC", description="for contacts without a valid zone")
    quiet_start: int | None = Field(None, description="local hour quiet hours begin (0-23)")
    quiet_end: int | None = Field(None, description="local hour quiet hours end (0-23)")


class AbTestIn(Strict):
    test_percent: int = Field(20, description="share of the audience in the test, 1-100")
    test_minutes: int = Field(240, description="test duration before the winner is chosen")
    winner_metric: WinnerMetric = WinnerMetric.OPEN_RATE
    winner_method: WinnerMethod = Field(
        WinnerMethod.Z_TEST,
        description="z_test: p < 1 - confidence; bayesian: P(leader beats runner-up) >= confidence",
    )
    min_sample: int = Field(100, ge=1, description="minimum delivered per variant")
    confidence: float = Field(0.95, gt=0.5, lt=1)
    fallback: WinnerFallback = WinnerFallback.LEADER


class CampaignIn(Strict):
    name: str = Field(..., min_length=1, max_length=200)
    include_segment_ids: list[RowId] = Field(..., description="segments or static lists")
    exclude_segment_ids: list[RowId] = Field(default_factory=list)
    variants: list[VariantIn] = Field(..., description="one, or 2-5 for an A/B test")
    ab_test: AbTestIn | None = None
    utm: dict[str, str] = Field(
        default_factory=dict,
        description="UTM parameters the click redirect adds to every link of the campaign "
        "(utm_source, utm_medium, utm_campaign, utm_term, utm_content); a link's own win",
    )

    @field_validator("utm")
    @classmethod
    def _utm(cls, value: dict[str, str]) -> dict[str, str]:
        for key, text in value.items():
            if key not in UTM_KEYS:
                raise ValueError(f"{key!r} is not one of {', '.join(sorted(UTM_KEYS))}")
            if not 0 < len(text.strip()) <= 200:
                raise ValueError(f"{key}: 1 to 200 characters")
        return {k: v.strip() for k, v in value.items()}


class VariantOut(BaseModel):
    id: int
    name: str
    template_version_id: int
    subject: str | None = Field(None, description="the variant's own subject; none: the version's")
    preheader: str | None = Field(None, description="the variant's own preheader")
    sender_identity_id: int | None = Field(None, description="the variant's own sender")


class CampaignOut(BaseModel):
    id: int
    name: str
    status: CampaignStatus
    include_segment_ids: list[int]
    exclude_segment_ids: list[int]
    variants: list[VariantOut]
    schedule_mode: ScheduleMode
    send_at: datetime | None
    local_date: str | None
    local_time: str | None
    fallback_time_zone: str
    quiet_start: int | None
    quiet_end: int | None
    utm: dict[str, str]
    test_percent: int
    test_minutes: int
    winner_metric: WinnerMetric
    winner_method: WinnerMethod
    min_sample: int
    confidence: float
    fallback: WinnerFallback
    winner_variant_id: int | None
    winner_source: str | None
    test_result: dict[str, Any] | None
    next_run_at: datetime | None
    audience_count: int | None
    started_at: datetime | None
    finished_at: datetime | None
    created_at: datetime


class AudienceIn(Strict):
    include_segment_ids: list[RowId]
    exclude_segment_ids: list[RowId] = Field(default_factory=list)


class AudienceOut(BaseModel):
    count: int


class WinnerIn(Strict):
    variant_id: RowId


class CountsOut(BaseModel):
    audience: int
    queued: int
    sent: int
    delivered: int
    failed: int
    suppressed: int
    unknown: int
    bounced: int
    human_unique_opens: int
    human_total_opens: int
    machine_unique_opens: int
    machine_total_opens: int
    human_unique_clicks: int
    human_total_clicks: int
    machine_unique_clicks: int
    machine_total_clicks: int
    unsubscribes: int
    complaints: int
    open_rate: float = Field(..., description="human unique opens / delivered")
    click_rate: float = Field(..., description="human unique clicks / delivered")
    click_to_open: float = Field(..., description="human unique clicks / human unique opens")
    bounce_rate: float = Field(..., description="bounced / sent")
    unsubscribe_rate: float = Field(..., description="unsubscribes / delivered")
    complaint_rate: float = Field(..., description="complaints / delivered")


class VariantReportOut(CountsOut):
    variant_id: int
    name: str
    test: bool


class LinkReportOut(BaseModel):
    index: int
    url: str
    text: str
    human_clicks: int
    human_unique_clicks: int
    share: float


class TimePointOut(BaseModel):
    hour: datetime
    human_opens: int
    human_clicks: int


class ReportOut(BaseModel):
    campaign: CampaignOut
    totals: CountsOut
    variants: list[VariantReportOut]
    links: list[LinkReportOut]
    over_time: list[TimePointOut]


class SplitPathOut(BaseModel):
    path: str
    contacts: int
    sent: int
    delivered: int
    human_unique_opens: int
    human_unique_clicks: int
    open_rate: float
    click_rate: float


class SplitArmOut(BaseModel):
    path: str
    successes: int
    trials: int
    rate: float
    ci_low: float
    ci_high: float
    p_value_vs_leader: float
    probability_to_beat_control: float | None


class SplitTestOut(BaseModel):
    leader: str
    variants: list[SplitArmOut]
    z: float
    p_value: float
    probability_leader_beats_runner_up: float
    confidence: float
    significant: bool


class SplitReportOut(BaseModel):
    """A workflow split node's A/B report (automation.workflows.splits)."""

    workflow_id: int
    node_id: str
    paths: list[SplitPathOut]
    tests: dict[str, SplitTestOut]
