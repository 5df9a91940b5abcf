"""A campaign's statuses and the one rule for moving between them."""

from __future__ import annotations

from automation import clock
from automation.campaigns.models import (
    Campaign,
    CampaignStatus,
)
from automation.email.models import MessageStatus
from automation.errors import Conflict

S = CampaignStatus
ALLOWED: dict[CampaignStatus, frozenset[CampaignStatus]] = {
    S.DRAFT: frozenset({S.SCHEDULED, S.CANCELLED}),
    S.SCHEDULED: frozenset({S.SCHEDULED, S.TESTING, S.SENDING, S.FINISHED, S.PAUSED, S.CANCELLED}),
    S.TESTING: frozenset({S.SENDING, S.AWAITING_WINNER, S.PAUSED, S.CANCELLED}),
    S.AWAITING_WINNER: frozenset({S.SENDING, S.PAUSED, S.CANCELLED}),
    S.SENDING: frozenset({S.FINISHED, S.PAUSED, S.CANCELLED}),
    S.PAUSED: frozenset({S.SCHEDULED, S.TESTING, S.AWAITING_WINNER, S.SENDING, S.CANCELLED}),
    S.FINISHED: frozenset(),
    S.CANCELLED: frozenset(),
}
# Outcomes that count toward "finished": sent + failed + suppressed + unknown = audience.
DONE = (MessageStatus.SENT, MessageStatus.FAILED, MessageStatus.SUPPRESSED, MessageStatus.UNKNOWN)


def move(campaign: Campaign, to: CampaignStatus) -> None:
    """The one rule for campaign status changes."""
    if to not in ALLOWED[campaign.status]:
        raise Conflict(f"a campaign cannot go from {campaign.status.value} to {to.value}")
    campaign.status = to
    campaign.updated_at = clock.now()


RUNNING = (CampaignStatus.SCHEDULED, CampaignStatus.TESTING, CampaignStatus.SENDING)
