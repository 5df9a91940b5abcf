"""Shared pieces for campaign tests: lists of contacts, variants, and engagement written
the way tracking writes it (events with message_id / machine / link)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import insert, select

from automation import clock
from automation.contacts.models import Contact, ContactStatus, Event
from automation.email.models import Message
from automation.segments.membership import add_members
from automation.segments.models import SegmentKind
from automation.segments.service import create_segment
from automation.segments.shapes import (
    SegmentIn,
)


def bulk_contacts(session: Any, prefix: str, count: int, **fields: Any) -> list[int]:
    now = clock.now()
    rows = [
        {
            "email": f"{prefix}{n}@example.com",
            "first_name": f"P{n}",
            "last_name": "",
            "status": ContactStatus.SUBSCRIBED,
            "time_zone": "UTC",
            "attributes": {},
            "created_at": now,
            "updated_at": now,
            **fields,
        }
        for n in range(count)
    ]
    session.execute(insert(Contact), rows)
    return list(
        session.scalars(
            select(Contact.id).where(Contact.email.like(f"{prefix}%")).order_by(Contact.id)
        )
    )


def make_list(session: Any, name: str, contact_ids: list[int]) -> int:
    segment = create_segment(session, SegmentIn(name=name, kind=SegmentKind.STATIC))
    add_members(session, segment.id, contact_ids)
    return segment.id


def engage(
    session: Any,
    message: Message | Any,
    name: str,
    *,
    machine: bool,
    link: int | None = None,
    at: datetime | None = None,
) -> dict[str, Any]:
    """One tracking event row as the tracking worker writes it (returned for bulk insert)."""
    properties: dict[str, Any] = {"message_id": message.id, "machine": machine}
    if link is not None:
        properties["link_index"] = link
    return {
        "contact_id": message.contact_id,
        "name": name,
        "properties": properties,
        "occurred_at": at or clock.now(),
        "received_at": at or clock.now(),
        "source": "tracking",
    }


def write_events(session: Any, rows: list[dict[str, Any]]) -> None:
    for start in range(0, len(rows), 2000):
        session.execute(insert(Event), rows[start : start + 2000])


def start_campaign(sessions: Any, version_id: int, audience_id: int, name: str = "Spring") -> int:
    """A one-variant campaign to ``audience_id``, scheduled for now and started as beat's
    tick starts it (its messages queued for the outbox); its id."""
    from automation.campaigns import service as campaigns
    from automation.campaigns.schema import CampaignIn, ScheduleIn, VariantIn
    from automation.db import transaction

    with transaction(sessions) as s:
        campaign_id = campaigns.create_campaign(
            s,
            CampaignIn(
                name=name,
                include_segment_ids=[audience_id],
                variants=[VariantIn(template_version_id=version_id)],
            ),
        ).id
        campaigns.schedule_campaign(s, campaign_id, ScheduleIn())
    with transaction(sessions) as s:
        assert campaigns.run_due(s)["started"] == 1
    return campaign_id
