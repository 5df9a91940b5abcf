"""The beat tick (:func:`run_due`): start due campaigns, decide due tests, finish completed
sends, and catch messages that came back from a sender after a pause or a cancel."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from automation import clock
from automation.campaigns.lifecycle import DONE, move
from automation.campaigns.models import (
    Campaign,
    CampaignRecipient,
    CampaignStatus,
)
from automation.campaigns.starting import start_campaign
from automation.campaigns.winner import TEST_RECHECK, decide_winner, test_ends_at
from automation.email.models import Message
from automation.email.outbox import park, withdraw


def _finish_sent(session: Session, now: datetime) -> int:
    """Sending campaigns whose every recipient has an outcome become finished."""
    done = (
        select(func.count())
        .where(Message.campaign_id == Campaign.id, Message.status.in_(DONE))
        .scalar_subquery()
    )
    # Recipients erased (GDPR) while the campaign ran leave with their messages.
    recipients = (
        select(func.count()).where(CampaignRecipient.campaign_id == Campaign.id).scalar_subquery()
    )
    finished = 0
    for campaign in session.scalars(
        select(Campaign)
        .where(Campaign.status == CampaignStatus.SENDING, done >= recipients)
        .with_for_update(skip_locked=True)
    ):
        campaign.finished_at = now
        move(campaign, CampaignStatus.FINISHED)
        finished += 1
    return finished


def run_due(session: Session, *, now: datetime | None = None) -> dict[str, int]:
    """The beat tick: start due campaigns, decide due tests, finish completed sends."""
    now = now or clock.now()
    report = {"started": 0, "decided": 0, "finished": 0, "reparked": 0, "withdrawn": 0}
    due = session.scalars(
        select(Campaign)
        .where(
            Campaign.status.in_((CampaignStatus.SCHEDULED, CampaignStatus.TESTING)),
            Campaign.next_run_at <= now,
        )
        .order_by(Campaign.next_run_at)
        .limit(20)
        .with_for_update(skip_locked=True)
    ).all()
    for campaign in due:
        if campaign.status is CampaignStatus.SCHEDULED:
            start_campaign(session, campaign, now)
            report["started"] += 1
        else:
            ends = test_ends_at(session, campaign, now)
            if ends is None or ends > now:
                campaign.next_run_at = ends or now + TEST_RECHECK
                continue
            decide_winner(session, campaign, now)
            report["decided"] += 1
    report["finished"] = _finish_sent(session, now)
    report["reparked"] = _repark(session)
    report["withdrawn"] = _withdraw_cancelled(session, now)
    return report


# A message leased when its campaign was cancelled comes back within the lease time
# (an expired lease turns it `unknown`, not waiting); look back well past that.
CANCEL_SWEEP = timedelta(hours=1)


def _withdraw_cancelled(session: Session, now: datetime) -> int:
    """Messages a sender held during a cancel and that came back deferred are withdrawn
    like the rest (the tick runs more often than the shortest backoff)."""
    recent = select(Campaign.id).where(
        Campaign.status == CampaignStatus.CANCELLED, Campaign.updated_at >= now - CANCEL_SWEEP
    )
    deleted, withdrawn = withdraw(session, Message.campaign_id.in_(recent))
    return deleted + withdrawn


def _repark(session: Session) -> int:
    """A message leased before a pause and deferred after it came back with a retry time:
    park it again (the tick runs more often than the shortest backoff)."""
    paused = select(Campaign.id).where(Campaign.status == CampaignStatus.PAUSED)
    return park(session, Message.campaign_id.in_(paused))
