"""The demo's campaign: an A/B test of two subject lines to a newsletter list, scheduled
for 09:00 tomorrow in each recipient's zone."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from automation import clock
from automation.campaigns.models import Campaign, WinnerFallback, WinnerMetric
from automation.campaigns.schema import AbTestIn, CampaignIn, ScheduleIn, VariantIn
from automation.campaigns.service import create_campaign, schedule_campaign
from automation.contacts.models import Contact, ContactStatus
from automation.email.models import Template, TemplateVersion
from automation.segments.membership import add_members
from automation.segments.models import Segment, SegmentKind

NAME = "Spring newsletter (A/B subject test)"


def load_demo_campaign(session: Session) -> int:
    """Create and schedule the demo campaign unless it exists; returns how many were made."""
    if session.scalar(select(Campaign.id).where(Campaign.name == NAME)) is not None:
        return 0
    version_id = session.scalar(
        select(TemplateVersion.id)
        .join(Template, Template.id == TemplateVersion.template_id)
        .where(Template.deleted_at.is_(None))
        .order_by(TemplateVersion.id)
    )
    subscribers = list(
        session.scalars(
            select(Contact.id).where(Contact.status == ContactStatus.SUBSCRIBED).limit(2000)
        )
    )
    if version_id is None or not subscribers:
        return 0
    listed = session.scalar(select(Segment).where(Segment.name == "Newsletter"))
    if listed is None:
        now = clock.now()
        listed = Segment(
            name="Newsletter",
            description="Demo list for the campaign",
            kind=SegmentKind.STATIC,
            definition=None,
            member_count=0,
            created_at=now,
            updated_at=now,
        )
        session.add(listed)
        session.flush()
        add_members(session, listed.id, subscribers)
    campaign = create_campaign(
        session,
        CampaignIn(
            name=NAME,
            include_segment_ids=[listed.id],
            variants=[
                VariantIn(template_version_id=version_id),
                VariantIn(template_version_id=version_id, subject="Spring is here: 20 % off"),
            ],
            ab_test=AbTestIn(
                test_percent=20,
                test_minutes=240,
                winner_metric=WinnerMetric.OPEN_RATE,
                min_sample=100,
                fallback=WinnerFallback.LEADER,
            ),
        ),
    )
    tomorrow = (clock.now() + timedelta(days=1)).date().isoformat()
    schedule_campaign(
        session,
        campaign.id,
        ScheduleIn(
            mode="local",
            local_date=tomorrow,
            local_time="09:00",
            fallback_time_zone="Europe/Berlin",
            quiet_start=21,
            quiet_end=8,
        ),
    )
    return 1
