"""Campaigns: create and validate, freeze the audience, queue through the outbox, pause,
resume, cancel, decide the A/B winner and send it to the rest. The beat tick
(:func:`run_due`) advances every campaign; nothing waits in Celery.

This module is the campaigns' public surface; each job lives in its own module:
editing (create, change, delete), schedule (when it starts, each recipient's send time),
starting (freeze the audience and queue), winner (the A/B test), control (pause, resume,
cancel), tick (the beat), queries (reads) and lifecycle (statuses)."""

from automation.campaigns.control import cancel_campaign, pause_campaign, resume_campaign
from automation.campaigns.editing import (
    MAX_VARIANTS,
    MIN_TEST_MINUTES,
    VARIANT_NAMES,
    create_campaign,
    delete_campaign,
    update_campaign,
)
from automation.campaigns.lifecycle import ALLOWED, move
from automation.campaigns.queries import (
    audience_count,
    campaign_progress,
    campaigns_using_segment,
    get_campaign,
    list_campaigns,
    variant_contents,
    variants_of,
)
from automation.campaigns.schedule import schedule_campaign
from automation.campaigns.starting import start_campaign
from automation.campaigns.tick import run_due
from automation.campaigns.winner import decide_winner, pick_winner, test_ends_at

__all__ = [
    "ALLOWED",
    "MAX_VARIANTS",
    "MIN_TEST_MINUTES",
    "VARIANT_NAMES",
    "audience_count",
    "campaign_progress",
    "campaigns_using_segment",
    "cancel_campaign",
    "create_campaign",
    "decide_winner",
    "delete_campaign",
    "get_campaign",
    "list_campaigns",
    "move",
    "pause_campaign",
    "pick_winner",
    "resume_campaign",
    "run_due",
    "schedule_campaign",
    "start_campaign",
    "test_ends_at",
    "update_campaign",
    "variant_contents",
    "variants_of",
]
