"""Example segments over the demo data set (automation/demo.py): one of each kind of
condition a marketer reaches for first, materialised so their counts show at once."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from automation.contacts.models import Event
from automation.segments.membership import add_members, refresh_segment
from automation.segments.models import Segment, SegmentKind
from automation.segments.schema import (
    Filter,
)
from automation.segments.service import create_segment
from automation.segments.shapes import (
    SegmentIn,
)

SUBSCRIBED = {"field": "status", "operator": "equals", "value": "subscribed"}

EXAMPLES: list[tuple[str, str, list[dict[str, Any]]]] = [
    (
        "Paying customers",
        "On a paid plan and still subscribed",
        [
            {"field": "attributes.plan", "operator": "in", "value": ["pro", "enterprise"]},
            SUBSCRIBED,
        ],
    ),
    (
        "Cart abandoners",
        "Added to cart in the last 7 days and bought nothing since",
        [
            {"event": "added_to_cart", "within_days": 7},
            {"event": "order_completed", "operator": "not_performed", "within_days": 7},
            SUBSCRIBED,
        ],
    ),
    (
        "Birthday today",
        "Today is their birthday where they live",
        [{"field": "attributes.birthday", "operator": "anniversary_today"}, SUBSCRIBED],
    ),
    (
        "Renewing within 30 days",
        "Renewal date in the next 30 days (their local calendar)",
        [{"field": "attributes.renewal_date", "operator": "in_next_days", "value": 30}],
    ),
    (
        "High-value VIPs",
        "Tagged vip with a lifetime value of 1,000 or more",
        [
            {"tags": ["vip"]},
            {"field": "attributes.lifetime_value", "operator": "greater_or_equal", "value": 1000},
        ],
    ),
    (
        "Engaged recently",
        "Clicked an email, ordered, or browsed a lot in the last weeks",
        [
            {
                "any": [
                    {"email": "clicked", "within_days": 30},
                    {"event": "order_completed", "within_days": 30},
                    {"event": "page_viewed", "operator": "at_least", "times": 3, "within_days": 14},
                ]
            }
        ],
    ),
    (
        "Leads who never bought",
        "Leads and MQLs without a single order",
        [
            {"field": "lifecycle_stage", "operator": "in", "value": ["lead", "mql"]},
            {"event": "order_completed", "operator": "not_performed"},
        ],
    ),
    (
        "Big spenders",
        "At least one order of 150 or more in the last 90 days",
        [
            {
                "event": "order_completed",
                "within_days": 90,
                "where": [{"property": "total", "operator": "greater_or_equal", "value": 150}],
            }
        ],
    ),
]


def load_demo_segments(session: Session) -> int:
    """Create the example segments and a static list (skipping names already taken)."""
    taken = set(session.scalars(select(Segment.name)))
    created: dict[str, int] = {}
    for name, description, conditions in EXAMPLES:
        if name in taken:
            continue
        segment = create_segment(
            session,
            SegmentIn(
                name=name,
                description=description,
                conditions=Filter.model_validate({"conditions": conditions}).conditions,
            ),
        )
        refresh_segment(session, segment.id)
        created[name] = segment.id
    if "Webinar attendees" not in taken:
        listed = create_segment(
            session,
            SegmentIn(
                name="Webinar attendees",
                description="Static list: registered for the spring webinar",
                kind=SegmentKind.STATIC,
            ),
        )
        attendees = session.scalars(
            select(Event.contact_id).where(Event.name == "webinar_registered").distinct()
        )
        add_members(session, listed.id, list(attendees))
        created["Webinar attendees"] = listed.id
        if "Paying customers" in created:
            both = create_segment(
                session,
                SegmentIn(
                    name="Paying webinar attendees",
                    description="A segment built from another segment and a list",
                    conditions=Filter.model_validate(
                        {
                            "conditions": [
                                {"segment": created["Paying customers"]},
                                {"segment": listed.id},
                            ]
                        }
                    ).conditions,
                ),
            )
            refresh_segment(session, both.id)
            created[both.name] = both.id
    return len(created)
