"""The A/B test: when it ends, the significance test and fallback, a person's pick, and
sending the winner to the rest."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from automation import clock
from automation.campaigns.lifecycle import move
from automation.campaigns.models import (
    Campaign,
    CampaignRecipient,
    CampaignStatus,
    WinnerFallback,
)
from automation.campaigns.queries import get_campaign, variants_of
from automation.campaigns.reports import test_result
from automation.campaigns.schedule import assign_send_times
from automation.campaigns.starting import queue_recipients
from automation.email.models import Message, MessageStatus
from automation.email.outbox import WAITING
from automation.errors import Conflict, FieldError, InvalidInput

# While test messages still wait (throttled, deferred, far time zones), look again this often.
TEST_RECHECK = timedelta(minutes=1)


def test_ends_at(session: Session, campaign: Campaign, now: datetime) -> datetime | None:
    """When the test period ends: ``test_minutes`` after the last test message went out,
    or None while some are still being sent or due to go soon (the period has not begun).
    A message held further out than one test period (a frequency-cap deferral of days, a
    long retry backoff) does not hold the test back. Before the winner is picked every
    message of the campaign is a test message."""
    horizon = now + timedelta(minutes=campaign.test_minutes)
    waiting = session.scalar(
        select(func.count())
        .select_from(Message)
        .where(
            Message.campaign_id == campaign.id,
            (Message.status == MessageStatus.SENDING)
            | (Message.status.in_(WAITING) & (Message.next_attempt_at <= horizon)),
        )
    )
    if waiting:
        return None
    last = session.scalar(
        select(func.max(Message.sent_at)).where(Message.campaign_id == campaign.id)
    )
    return (last or campaign.started_at or now) + timedelta(minutes=campaign.test_minutes)


def decide_winner(session: Session, campaign: Campaign, now: datetime) -> None:
    """At the end of the test: significance test on human engagement, then the fallback."""
    result = test_result(session, campaign)
    campaign.test_result = result
    variants = variants_of(session, campaign.id)
    if result["significant"]:
        _send_winner(session, campaign, result["leader_id"], "test", now)
    elif campaign.fallback is WinnerFallback.LEADER:
        _send_winner(session, campaign, result["leader_id"], "fallback", now)
    elif campaign.fallback is WinnerFallback.CONTROL:
        _send_winner(session, campaign, variants[0].id, "fallback", now)
    else:
        campaign.next_run_at = None
        move(campaign, CampaignStatus.AWAITING_WINNER)


def _send_winner(
    session: Session, campaign: Campaign, variant_id: int, source: str, now: datetime
) -> None:
    R = CampaignRecipient
    campaign.winner_variant_id = variant_id
    campaign.winner_source = source
    campaign.next_run_at = None
    session.execute(
        update(R)
        .where(R.campaign_id == campaign.id, R.variant_id.is_(None))
        .values(variant_id=variant_id)
        .execution_options(synchronize_session=False)
    )
    # The rest gets its send times from now: the test took its time.
    assign_send_times(session, campaign, now, rest_only=True)
    queue_recipients(session, campaign, rest_only=True)
    move(campaign, CampaignStatus.SENDING)


def pick_winner(session: Session, campaign_id: int, variant_id: int) -> Campaign:
    """A person's pick: before the rest is sent (during the test or after a tie)."""
    campaign = get_campaign(session, campaign_id, lock=True)
    if variant_id not in {v.id for v in variants_of(session, campaign.id)}:
        raise InvalidInput(FieldError("variant_id", f"no variant {variant_id} in this campaign"))
    if campaign.status not in (CampaignStatus.TESTING, CampaignStatus.AWAITING_WINNER):
        raise Conflict(f"a winner cannot be picked while the campaign is {campaign.status.value}")
    if campaign.test_result is None:
        campaign.test_result = test_result(session, campaign)
    _send_winner(session, campaign, variant_id, "manual", clock.now())
    return campaign
