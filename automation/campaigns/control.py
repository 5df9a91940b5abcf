"""Pausing, resuming and cancelling a campaign; its waiting messages are parked, unparked
or withdrawn through the outbox."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from automation import clock
from automation.campaigns.lifecycle import move
from automation.campaigns.models import (
    Campaign,
    CampaignRecipient,
    CampaignStatus,
)
from automation.campaigns.queries import get_campaign
from automation.email.models import Message
from automation.email.outbox import park, unpark, withdraw
from automation.errors import Conflict


def pause_campaign(session: Session, campaign_id: int) -> Campaign:
    """Park the campaign's waiting messages; rows a sender holds finish as they are."""
    campaign = get_campaign(session, campaign_id, lock=True)
    previous = campaign.status
    move(campaign, CampaignStatus.PAUSED)
    campaign.paused_from = previous
    park(session, Message.campaign_id == campaign.id)
    return campaign


def resume_campaign(session: Session, campaign_id: int) -> Campaign:
    """Each parked message gets its recipient's send time back (now if that has passed)."""
    campaign = get_campaign(session, campaign_id, lock=True)
    if campaign.status is not CampaignStatus.PAUSED or campaign.paused_from is None:
        raise Conflict(f"a {campaign.status.value} campaign cannot be resumed")
    now = clock.now()
    R = CampaignRecipient
    own_time = (
        select(R.send_at)
        .where(R.campaign_id == campaign.id, R.contact_id == Message.contact_id)
        .scalar_subquery()
    )
    unpark(session, Message.campaign_id == campaign.id, send_at=own_time, now=now)
    move(campaign, campaign.paused_from)
    campaign.paused_from = None
    return campaign


def cancel_campaign(session: Session, campaign_id: int) -> Campaign:
    """Stop for good (outbox.withdraw): waiting messages never handed to a relay
    are removed, deferred ones that already had an SMTP attempt end `failed`/`withdrawn`
    (kept as the record of the attempt), sent ones stay in the report. Messages a sender
    holds right now finish; if one comes back deferred, the tick withdraws it."""
    campaign = get_campaign(session, campaign_id, lock=True)
    move(campaign, CampaignStatus.CANCELLED)
    campaign.next_run_at = None
    withdraw(session, Message.campaign_id == campaign.id)
    return campaign
