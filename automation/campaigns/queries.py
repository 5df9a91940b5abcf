"""Reading campaigns: one, all, a running one's progress, its variants; which campaigns
use a segment, and how large an audience would be."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from automation.campaigns.lifecycle import DONE, RUNNING
from automation.campaigns.models import (
    Campaign,
    CampaignStatus,
    CampaignVariant,
)
from automation.email.models import Message, MessageStatus, TemplateVersion, VersionOverride
from automation.errors import FieldError, InvalidInput, NotFound
from automation.segments.membership import audience_ids
from automation.segments.models import Segment


def get_campaign(session: Session, campaign_id: int, *, lock: bool = False) -> Campaign:
    stmt = select(Campaign).where(Campaign.id == campaign_id)
    if lock:
        stmt = stmt.with_for_update()
    campaign = session.scalar(stmt)
    if campaign is None:
        raise NotFound(f"no campaign {campaign_id}")
    return campaign


def list_campaigns(session: Session) -> list[Campaign]:
    return list(session.scalars(select(Campaign).order_by(Campaign.id.desc())))


def campaign_progress(session: Session, campaign: Campaign) -> dict[str, Any]:
    """Message counts by status and the share of recipients with an outcome: what the
    campaign page polls while it runs (one indexed GROUP BY on the campaign's messages)."""
    counts = dict.fromkeys([s.value for s in MessageStatus], 0)
    for status, n in session.execute(
        select(Message.status, func.count())
        .where(Message.campaign_id == campaign.id)
        .group_by(Message.status)
    ):
        counts[MessageStatus(status).value] = int(n)
    done = sum(counts[s.value] for s in DONE)
    audience = campaign.audience_count or 0
    return {
        "status": campaign.status.value,
        "audience": audience,
        "counts": counts,
        "done": done,
        "percent": round(100 * done / audience, 1) if audience else 0.0,
        "running": campaign.status in RUNNING,
        "next_run_at": campaign.next_run_at.isoformat() if campaign.next_run_at else None,
    }


def variants_of(session: Session, campaign_id: int) -> list[CampaignVariant]:
    return list(
        session.scalars(
            select(CampaignVariant)
            .where(CampaignVariant.campaign_id == campaign_id)
            .order_by(CampaignVariant.position)
        )
    )


@dataclass(frozen=True)
class VariantContent:
    """What a variant sends: its template version, and its own subject, preheader and
    sender where it overrides the version's (None: the version's)."""

    variant: CampaignVariant
    version: TemplateVersion
    subject: str | None
    preheader: str | None
    sender_identity_id: int | None

    @property
    def sent_subject(self) -> str:
        return self.version.subject if self.subject is None else self.subject

    @property
    def sent_preheader(self) -> str:
        return self.version.preheader if self.preheader is None else self.preheader

    @property
    def sent_sender_identity_id(self) -> int | None:
        if self.sender_identity_id is None:
            return self.version.sender_identity_id
        return self.sender_identity_id


def variant_contents(session: Session, campaign_id: int) -> list[VariantContent]:
    rows = session.execute(
        select(CampaignVariant, TemplateVersion, VersionOverride)
        .join(TemplateVersion, TemplateVersion.id == CampaignVariant.template_version_id)
        .outerjoin(VersionOverride, VersionOverride.id == CampaignVariant.override_id)
        .where(CampaignVariant.campaign_id == campaign_id)
        .order_by(CampaignVariant.position)
    ).all()
    return [
        VariantContent(
            variant,
            version,
            override.subject if override else None,
            override.preheader if override else None,
            variant.sender_identity_id,
        )
        for variant, version, override in rows
    ]


def check_segments(session: Session, field: str, ids: Sequence[int]) -> list[FieldError]:
    known = set(session.scalars(select(Segment.id).where(Segment.id.in_(ids)))) if ids else set()
    return [
        FieldError(f"{field}[{n}]", f"no segment or list {sid}")
        for n, sid in enumerate(ids)
        if sid not in known
    ]


def campaigns_using_segment(session: Session, segment_id: int) -> list[str]:
    """Names of the campaigns whose audience is yet to be frozen (draft, scheduled) and
    that include or exclude this segment."""
    return [
        campaign.name
        for campaign in session.scalars(
            select(Campaign)
            .where(Campaign.status.in_([CampaignStatus.DRAFT, CampaignStatus.SCHEDULED]))
            .order_by(Campaign.name)
        )
        if segment_id in campaign.include_segment_ids or segment_id in campaign.exclude_segment_ids
    ]


def audience_count(session: Session, include: Sequence[int], exclude: Sequence[int] = ()) -> int:
    """How many contacts the campaign would go to now (each contact once)."""
    errors = check_segments(session, "include_segment_ids", include)
    errors += check_segments(session, "exclude_segment_ids", exclude)
    if not include:
        errors.append(FieldError("include_segment_ids", "at least one segment or list"))
    if errors:
        raise InvalidInput(errors)
    ids = audience_ids(session, include, exclude).subquery()
    return int(session.scalar(select(func.count()).select_from(ids)) or 0)
