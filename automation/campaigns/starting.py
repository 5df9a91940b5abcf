"""Starting a campaign: freeze the audience once, assign variants and send times, queue
through the outbox."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import case, func, insert, literal, select
from sqlalchemy.orm import Session

from automation.campaigns.lifecycle import move
from automation.campaigns.models import (
    Campaign,
    CampaignRecipient,
    CampaignStatus,
    CampaignVariant,
)
from automation.campaigns.queries import variants_of
from automation.campaigns.schedule import assign_send_times
from automation.email.outbox import queue_for_contacts
from automation.segments.membership import audience_ids


def freeze_audience(session: Session, campaign: Campaign, variants: list[CampaignVariant]) -> int:
    """INSERT … SELECT the audience once. A contact's bucket is a deterministic hash of the
    campaign and contact ids; the test group is the buckets under the percentage, dealt to
    the variants round-robin in bucket order (an even split)."""
    R = CampaignRecipient
    ids = audience_ids(
        session, campaign.include_segment_ids, campaign.exclude_segment_ids
    ).subquery()
    contact_id = ids.c[0]
    seed = (campaign.id * 7919) % 2147483647
    hashed = select(
        contact_id.label("contact_id"),
        ((contact_id * 48271 + seed) % 2147483647).label("bucket"),
    ).subquery()
    ab = len(variants) > 1
    threshold = campaign.test_percent * 100 if ab else -1
    flagged = select(
        hashed.c.contact_id,
        hashed.c.bucket,
        case((hashed.c.bucket % 10000 < threshold, 1), else_=0).label("test"),
    ).subquery()
    ranked = select(
        flagged.c.contact_id,
        flagged.c.bucket,
        flagged.c.test,
        (
            func.row_number().over(
                partition_by=flagged.c.test, order_by=(flagged.c.bucket, flagged.c.contact_id)
            )
            - 1
        ).label("rank"),
    ).subquery()
    variant: Any
    if ab:
        variant = case(
            (
                ranked.c.test == 1,
                case(
                    {n: v.id for n, v in enumerate(variants)},
                    value=ranked.c.rank % len(variants),
                ),
            ),
            else_=None,
        )
    else:
        variant = literal(variants[0].id)
    columns = {
        "campaign_id": literal(campaign.id),
        "contact_id": ranked.c.contact_id,
        "bucket": ranked.c.bucket,
        "test": ranked.c.test == 1,
        "variant_id": variant,
    }
    session.execute(
        insert(R).from_select(list(columns), select(*[c.label(n) for n, c in columns.items()]))
    )
    return int(
        session.scalar(select(func.count()).select_from(R).where(R.campaign_id == campaign.id)) or 0
    )


def queue_recipients(session: Session, campaign: Campaign, *, rest_only: bool) -> int:
    """Queue one message per recipient with a variant, grouped by (variant, send time) so
    each group is one INSERT … SELECT; the dedupe key ``campaign:<id>:<contact>`` makes a
    repeat a no-op."""
    R = CampaignRecipient
    scope = [R.campaign_id == campaign.id, R.variant_id.is_not(None)]
    if rest_only:
        scope.append(R.test.is_(False))
    variants = {v.id: v for v in variants_of(session, campaign.id)}
    queued = 0
    groups = session.execute(select(R.variant_id, R.send_at).where(*scope).distinct()).all()
    for variant_id, send_at in groups:
        assert variant_id is not None  # scope excludes the rest still waiting for a winner
        queued += queue_for_contacts(
            session,
            select(R.contact_id).where(*scope, R.variant_id == variant_id, R.send_at == send_at),
            template_version_id=variants[variant_id].template_version_id,
            override_id=variants[variant_id].override_id,
            sender_identity_id=variants[variant_id].sender_identity_id,
            dedupe_prefix=f"campaign:{campaign.id}:",
            campaign_id=campaign.id,
            campaign_variant_id=variant_id,
            campaign_name=campaign.name,
            send_at=send_at,
        )
    return queued


def start_campaign(session: Session, campaign: Campaign, now: datetime) -> None:
    variants = variants_of(session, campaign.id)
    campaign.audience_count = freeze_audience(session, campaign, variants)
    campaign.started_at = now
    assign_send_times(session, campaign, now, rest_only=False)
    queue_recipients(session, campaign, rest_only=False)
    if campaign.audience_count == 0:
        campaign.finished_at = now
        move(campaign, CampaignStatus.FINISHED)
    elif len(variants) > 1:
        # The test period runs from the last test send; the tick checks it again then.
        last = session.scalar(
            select(func.max(CampaignRecipient.send_at)).where(
                CampaignRecipient.campaign_id == campaign.id, CampaignRecipient.test.is_(True)
            )
        )
        campaign.next_run_at = max(last or now, now) + timedelta(minutes=campaign.test_minutes)
        move(campaign, CampaignStatus.TESTING)
    else:
        campaign.next_run_at = None
        move(campaign, CampaignStatus.SENDING)
