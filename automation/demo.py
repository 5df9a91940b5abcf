"""A realistic demo data set: contacts with tags, stages, attributes and time zones, and a
few weeks of behaviour events, generated deterministically and inserted set-wise."""

from __future__ import annotations

import random
from datetime import date, timedelta
from typing import Any

from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session

from automation import clock
from automation.campaigns.samples import load_demo_campaign
from automation.contacts import tags as tag_ops
from automation.contacts.models import (
    ConsentRecord,
    Contact,
    ContactTag,
    CustomField,
    Event,
    FieldType,
)
from automation.email.models import SenderIdentity
from automation.email.samples import load_demo_templates
from automation.segments.samples import load_demo_segments
from automation.workflows.examples import load_example_workflows

FIRST = [
    "Ana",
    "Ben",
    "Chloé",
    "Dmitri",
    "Ebony",
    "Farid",
    "Grace",
    "Hiro",
    "Ines",
    "Jonas",
    "Kemi",
    "Lars",
    "Maya",
    "Nikhil",
    "Olga",
    "Pablo",
    "Qian",
    "Rosa",
    "Sven",
    "Tariq",
    "Uma",
    "Victor",
    "Wen",
    "Ximena",
    "Yusuf",
    "Zoë",
]
LAST = [
    "Andersen",
    "Baptiste",
    "Chen",
    "Dubois",
    "Eze",
    "Fischer",
    "García",
    "Haddad",
    "Ito",
    "Jensen",
    "Kowalski",
    "López",
    "Müller",
    "Nakamura",
    "O'Brien",
    "Petrov",
    "Quinn",
    "Rossi",
    "Silva",
    "Tanaka",
    "Ueda",
    "Volkov",
    "Walsh",
    "Yilmaz",
    "Zhang",
]
DOMAINS = ["example.com", "example.org", "mail.example.net", "acme.example", "globex.example"]
ZONES = [
    "Europe/London",
    "Europe/Paris",
    "Europe/Berlin",
    "America/New_York",
    "America/Chicago",
    "America/Los_Angeles",
    "Asia/Tokyo",
    "Australia/Sydney",
    "America/Sao_Paulo",
    "Asia/Kolkata",
]
STAGES = (
    ["subscriber"] * 40
    + ["lead"] * 25
    + ["mql"] * 12
    + ["sql"] * 8
    + ["opportunity"] * 5
    + ["customer"] * 10
)
STATUSES = (
    ["subscribed"] * 88 + ["unsubscribed"] * 6 + ["pending"] * 3 + ["bounced"] * 2 + ["complained"]
)
TAGS = ["newsletter", "webinar-2026", "trial", "vip", "partner", "beta", "ebook", "churn-risk"]
PLANS = ["free", "starter", "pro", "enterprise"]
PRODUCTS = [
    ("sku-101", "Trail Runner Shoes", 129.0),
    ("sku-202", "Rain Jacket", 189.0),
    ("sku-303", "Merino Base Layer", 79.0),
    ("sku-404", "Headlamp", 39.0),
    ("sku-505", "Camping Stove", 99.0),
]
FIELDS = [
    ("plan", "Plan", FieldType.CHOICE, PLANS),
    ("company", "Company", FieldType.TEXT, []),
    ("signup_date", "Sign-up date", FieldType.DATE, []),
    ("birthday", "Birthday", FieldType.DATE, []),
    ("renewal_date", "Renewal date", FieldType.DATE, []),
    ("lifetime_value", "Lifetime value", FieldType.NUMBER, []),
    ("newsletter_opt_in", "Newsletter opt-in", FieldType.BOOLEAN, []),
]


def _events_for(rng: random.Random, contact_id: int, now: Any, days: int) -> list[dict[str, Any]]:
    events = []
    for _ in range(rng.randint(0, 12)):
        at = now - timedelta(days=rng.uniform(0, days))
        kind = rng.random()
        props: dict[str, Any]
        sku, product, price = rng.choice(PRODUCTS)
        if kind < 0.5:
            name, props = (
                "page_viewed",
                {"path": rng.choice(["/", "/pricing", "/blog", "/docs", "/shop"])},
            )
        elif kind < 0.75:
            name, props = "product_viewed", {"sku": sku, "name": product, "price": price}
        elif kind < 0.88:
            name, props = "added_to_cart", {"sku": sku, "name": product, "price": price}
        elif kind < 0.96:
            name, props = (
                "order_completed",
                {"order_id": f"o-{contact_id}-{rng.randint(1, 9999)}", "total": price, "items": 1},
            )
        else:
            name, props = "webinar_registered", {"webinar": "Spring launch"}
        events.append(
            {
                "contact_id": contact_id,
                "name": name,
                "properties": props,
                "occurred_at": at,
                "received_at": at,
                "source": "demo",
                "idempotency_key": None,
            }
        )
    return events


def load_demo(
    session: Session, *, contacts: int = 3000, force: bool = False, seed: int = 7, days: int = 28
) -> str:
    existing = session.scalar(select(func.count()).select_from(Contact)) or 0
    if existing and not force:
        return f"the database already has {existing} contacts; demo not loaded (use --force)"
    rng = random.Random(seed)
    now = clock.now()
    today = now.date()
    declared = set(session.scalars(select(CustomField.name)))
    for name, label, kind, options in FIELDS:
        if name not in declared:
            session.add(
                CustomField(name=name, label=label, type=kind, options=options, created_at=now)
            )
    if not session.scalar(select(func.count()).select_from(SenderIdentity)):
        session.add(
            SenderIdentity(
                name="Default",
                from_name="Nurture Outdoor",
                from_email="hello@example.com",
                reply_to=None,
                created_at=now,
            )
        )
    start = existing
    rows = []
    for i in range(start, start + contacts):
        first, last = rng.choice(FIRST), rng.choice(LAST)
        status = rng.choice(STATUSES)
        created = now - timedelta(days=rng.uniform(0, 365))
        attrs: dict[str, Any] = {
            "plan": rng.choice(PLANS),
            "signup_date": created.date().isoformat(),
            "newsletter_opt_in": rng.random() < 0.7,
            "lifetime_value": round(rng.uniform(0, 2500), 2),
        }
        if rng.random() < 0.6:
            attrs["company"] = rng.choice(["Acme", "Globex", "Initech", "Umbrella", "Hooli"])
        if rng.random() < 0.5:
            attrs["birthday"] = date(
                rng.randint(1960, 2004), rng.randint(1, 12), rng.randint(1, 28)
            ).isoformat()
        if rng.random() < 0.3:
            attrs["renewal_date"] = (today + timedelta(days=rng.randint(-30, 120))).isoformat()
        rows.append(
            {
                "email": f"{first}.{last}.{i}@{rng.choice(DOMAINS)}".lower()
                .replace("'", "")
                .replace("é", "e")
                .replace("ë", "e")
                .replace("ü", "u")
                .replace("í", "i"),
                "first_name": first,
                "last_name": last,
                "status": status,
                "time_zone": rng.choice(ZONES),
                "lifecycle_stage": rng.choice(STAGES),
                "score": rng.randint(0, 120),
                "attributes": attrs,
                "source": "demo",
                "confirmed_at": created if status == "subscribed" else None,
                "emails_sent": 0,
                "opens": 0,
                "clicks": 0,
                "engagement_score": 0.0,
                "created_at": created,
                "updated_at": created,
                "external_id": None,
            }
        )
    ids = list(
        session.scalars(insert(Contact).returning(Contact.id, sort_by_parameter_order=True), rows)
    )
    session.execute(
        insert(ConsentRecord),
        [
            {
                "contact_id": cid,
                "status_from": None,
                "status_to": row["status"],
                "occurred_at": row["created_at"],
                "source": "demo",
                "ip": None,
                "consent_text": "Signed up on the website newsletter form",
            }
            for cid, row in zip(ids, rows, strict=True)
        ],
    )
    tag_ids = tag_ops.ensure_tags(session, TAGS)
    links = []
    for cid in ids:
        for tag in rng.sample(TAGS, rng.randint(0, 3)):
            links.append({"contact_id": cid, "tag_id": tag_ids[tag], "added_at": now})
    if links:
        session.execute(insert(ContactTag), links)
    events: list[dict[str, Any]] = []
    for cid in ids:
        events.extend(_events_for(rng, cid, now, days))
    for chunk in range(0, len(events), 5000):
        session.execute(insert(Event), events[chunk : chunk + 5000])

    templates = load_demo_templates(session)
    segments = load_demo_segments(session)
    campaigns = load_demo_campaign(session)
    workflows = load_example_workflows(session)
    return (
        f"demo loaded: {len(ids)} contacts, {len(links)} tag links, {len(events)} events, "
        f"{templates} email templates, {segments} segments, {campaigns} scheduled campaign; "
        f"{workflows}"
    )
