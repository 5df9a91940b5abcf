"""What a campaign did, from message rows and tracking events, machine hits kept apart:
totals, per variant, per link, over time, the A/B test result, CSV rows and the click map.

The contract with tracking (docs/campaigns.md): an open is an ``email.opened`` event (a
person's click records one too: docs/tracking.md, "What counts as opened") and a click an
``email.clicked`` event of the message's contact with properties ``message_id``
(int), ``machine`` (bool: a scanner, a proxy prefetch) and, for clicks, ``link`` (the
index into the template version's links). Bounces, unsubscribes and complaints are the
``bounced_at`` / ``unsubscribed_at`` / ``complained_at`` columns of the message."""

from __future__ import annotations

import html as html_lib
import re
from collections import defaultdict
from collections.abc import Iterator
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Integer, and_, case, cast, func, select, true
from sqlalchemy.orm import Session

from automation.campaigns.models import (
    Campaign,
    CampaignRecipient,
    CampaignVariant,
    WinnerMetric,
)
from automation.campaigns.stats import Arm, decide
from automation.contacts.models import Event
from automation.db import quarter_hour, quarter_start
from automation.email.context import sample_contact
from automation.email.models import Message, MessageStatus, TemplateVersion
from automation.email.rates import EmailCounts
from automation.email.render import TrackingUrls, VersionCache, render_email
from automation.errors import NotFound

UTC_ZONE = ZoneInfo("UTC")
OPENED = "email.opened"
CLICKED = "email.clicked"
COUNTS = [
    "audience",
    "queued",
    "sent",
    "delivered",
    "failed",
    "suppressed",
    "unknown",
    "bounced",
    "human_unique_opens",
    "human_total_opens",
    "machine_unique_opens",
    "machine_total_opens",
    "human_unique_clicks",
    "human_total_clicks",
    "machine_unique_clicks",
    "machine_total_clicks",
    "unsubscribes",
    "complaints",
]


def _event_message_id() -> Any:
    return Event.properties["message_id"].as_integer()


def _is_machine() -> Any:
    return Event.properties["machine"].as_boolean() == true()


def _per_message(campaign_ids: list[int]) -> Any:
    """One row per message of the campaigns with its human and machine hit counts. The
    join uses ix_events_name_contact_occurred (name, contact) then matches the message."""
    m, e = Message, Event
    machine = _is_machine()

    def hits(name: str, is_machine: bool) -> Any:
        cond = and_(e.name == name, machine if is_machine else ~machine)
        return func.sum(case((cond, 1), else_=0))

    return (
        select(
            m.id.label("id"),
            m.campaign_id.label("campaign_id"),
            m.contact_id.label("contact_id"),
            m.campaign_variant_id.label("variant_id"),
            m.status.label("status"),
            m.bounced_at.label("bounced_at"),
            m.unsubscribed_at.label("unsubscribed_at"),
            m.complained_at.label("complained_at"),
            hits(OPENED, False).label("h_opens"),
            hits(OPENED, True).label("m_opens"),
            hits(CLICKED, False).label("h_clicks"),
            hits(CLICKED, True).label("m_clicks"),
        )
        .select_from(m)
        .outerjoin(
            e,
            and_(
                e.contact_id == m.contact_id,
                e.name.in_((OPENED, CLICKED)),
                _event_message_id() == m.id,
            ),
        )
        .where(m.campaign_id.in_(campaign_ids))
        .group_by(
            m.id,
            m.campaign_id,
            m.contact_id,
            m.campaign_variant_id,
            m.status,
            m.bounced_at,
            m.unsubscribed_at,
            m.complained_at,
        )
        .subquery()
    )


def _flag(cond: Any) -> Any:
    return func.sum(case((cond, 1), else_=0))


def _counts(session: Session, campaign_id: int) -> dict[tuple[int | None, bool], dict[str, int]]:
    """Counts per (variant, in the test group)."""
    pm = _per_message([campaign_id])
    R = CampaignRecipient
    S = MessageStatus
    sent = pm.c.status == S.SENT.value
    human_open = pm.c.h_opens > 0  # a human click is recorded as an open too (tracking)
    rows = session.execute(
        select(
            pm.c.variant_id,
            R.test,
            _flag(pm.c.status.in_((S.QUEUED.value, S.DEFERRED.value, S.SENDING.value))),
            _flag(sent),
            _flag(and_(sent, pm.c.bounced_at.is_(None))),
            _flag(pm.c.status == S.FAILED.value),
            _flag(pm.c.status == S.SUPPRESSED.value),
            _flag(pm.c.status == S.UNKNOWN.value),
            _flag(pm.c.bounced_at.is_not(None)),
            _flag(human_open),
            func.coalesce(func.sum(pm.c.h_opens), 0),
            _flag(pm.c.m_opens > 0),
            func.coalesce(func.sum(pm.c.m_opens), 0),
            _flag(pm.c.h_clicks > 0),
            func.coalesce(func.sum(pm.c.h_clicks), 0),
            _flag(pm.c.m_clicks > 0),
            func.coalesce(func.sum(pm.c.m_clicks), 0),
            _flag(pm.c.unsubscribed_at.is_not(None)),
            _flag(pm.c.complained_at.is_not(None)),
        )
        .select_from(pm)
        .outerjoin(R, and_(R.campaign_id == campaign_id, R.contact_id == pm.c.contact_id))
        .group_by(pm.c.variant_id, R.test)
    ).all()
    out: dict[tuple[int | None, bool], dict[str, int]] = defaultdict(
        lambda: dict.fromkeys(COUNTS, 0)
    )
    for variant_id, test, *values in rows:
        out[(variant_id, bool(test))].update(
            {k: int(v or 0) for k, v in zip(COUNTS[1:], values, strict=True)}
        )
    for variant_id, test, n in session.execute(
        select(R.variant_id, R.test, func.count())
        .where(R.campaign_id == campaign_id)
        .group_by(R.variant_id, R.test)
    ):
        out[(variant_id, bool(test))]["audience"] = int(n)
    return out


def email_counts(counts: dict[str, int]) -> EmailCounts:
    """The report's counts as the ones every rate is defined on (automation/email/rates)."""
    return EmailCounts(
        sent=counts["sent"],
        delivered=counts["delivered"],
        bounced=counts["bounced"],
        opened=counts["human_unique_opens"],
        clicked=counts["human_unique_clicks"],
        unsubscribed=counts["unsubscribes"],
        complained=counts["complaints"],
    )


def _with_rates(counts: dict[str, int]) -> dict[str, Any]:
    rates = email_counts(counts).rates()
    return {**counts, **{name: value or 0.0 for name, value in rates.items()}}


def campaign_email_counts(session: Session, campaign_ids: list[int]) -> dict[int, EmailCounts]:
    """Per campaign, the counts its report's totals show (for lists of campaigns, such as
    the dashboard's): one grouped query."""
    if not campaign_ids:
        return {}
    pm = _per_message(campaign_ids)
    sent = pm.c.status == MessageStatus.SENT.value
    rows = session.execute(
        select(
            pm.c.campaign_id,
            _flag(sent),
            _flag(and_(sent, pm.c.bounced_at.is_(None))),
            _flag(pm.c.bounced_at.is_not(None)),
            _flag(pm.c.h_opens > 0),
            _flag(pm.c.h_clicks > 0),
            _flag(pm.c.unsubscribed_at.is_not(None)),
            _flag(pm.c.complained_at.is_not(None)),
        ).group_by(pm.c.campaign_id)
    )
    return {cid: EmailCounts(*(int(v or 0) for v in values)) for cid, *values in rows}


def _sum(parts: list[dict[str, int]]) -> dict[str, int]:
    return {k: sum(p.get(k, 0) for p in parts) for k in COUNTS}


def _variants(session: Session, campaign_id: int) -> list[CampaignVariant]:
    return list(
        session.scalars(
            select(CampaignVariant)
            .where(CampaignVariant.campaign_id == campaign_id)
            .order_by(CampaignVariant.position)
        )
    )


def test_result(session: Session, campaign: Campaign) -> dict[str, Any]:
    """The significance test on the test group's human numbers (machine hits never count)."""
    counts = _counts(session, campaign.id)
    arms = []
    for variant in _variants(session, campaign.id):
        c = counts.get((variant.id, True), dict.fromkeys(COUNTS, 0))
        if campaign.winner_metric is WinnerMetric.OPEN_RATE:
            successes, trials = c["human_unique_opens"], c["delivered"]
        elif campaign.winner_metric is WinnerMetric.CLICK_RATE:
            successes, trials = c["human_unique_clicks"], c["delivered"]
        else:
            successes, trials = c["human_unique_clicks"], c["human_unique_opens"]
        arms.append(Arm(variant.id, variant.name, successes, trials))
    result = decide(
        arms,
        confidence=campaign.confidence,
        min_sample=campaign.min_sample,
        method=campaign.winner_method.value,
    )
    result["metric"] = campaign.winner_metric.value
    return result


def _links(session: Session, campaign_id: int) -> list[dict[str, Any]]:
    """Human clicks per (template version, link index), with each link's share of the
    version's human clicks."""
    m, e = Message, Event
    link = cast(e.properties["link_index"].as_integer(), Integer)
    rows = session.execute(
        select(
            m.template_version_id,
            link,
            func.count(),
            func.count(func.distinct(m.id)),
        )
        .select_from(m)
        .join(
            e,
            and_(
                e.contact_id == m.contact_id,
                e.name == CLICKED,
                _event_message_id() == m.id,
                ~_is_machine(),
            ),
        )
        .where(m.campaign_id == campaign_id)
        .group_by(m.template_version_id, link)
    ).all()
    clicks: dict[tuple[int, int], tuple[int, int]] = {
        (v, int(i)): (int(n), int(u)) for v, i, n, u in rows if i is not None
    }
    version_ids = sorted(
        set(
            session.scalars(
                select(CampaignVariant.template_version_id).where(
                    CampaignVariant.campaign_id == campaign_id
                )
            )
        )
    )
    out = []
    for version_id in version_ids:
        version = session.get(TemplateVersion, version_id)
        if version is None:
            continue
        total = sum(n for (v, _), (n, _) in clicks.items() if v == version_id)
        for item in version.links:
            if item.get("honeypot"):  # the compiler's hidden scanner trap, not a real link
                continue
            n, u = clicks.get((version_id, int(item["index"])), (0, 0))
            out.append(
                {
                    "template_version_id": version_id,
                    "index": int(item["index"]),
                    "url": str(item["url"]),
                    "text": str(item.get("text") or ""),
                    "human_clicks": n,
                    "human_unique_clicks": u,
                    "share": n / total if total else 0.0,
                }
            )
    return out


def _over_time(session: Session, campaign_id: int, zone: ZoneInfo) -> list[dict[str, Any]]:
    """Human opens and clicks per hour of ``zone`` (the account time zone; an hour of
    India's +5:30 starts at :30 UTC), each hour given as its start in the zone."""
    m, e = Message, Event
    quarter = quarter_hour(session, e.occurred_at)
    rows = session.execute(
        select(
            quarter,
            _flag(e.name == OPENED),
            _flag(e.name == CLICKED),
        )
        .select_from(m)
        .join(
            e,
            and_(
                e.contact_id == m.contact_id,
                e.name.in_((OPENED, CLICKED)),
                _event_message_id() == m.id,
                ~_is_machine(),
            ),
        )
        .where(m.campaign_id == campaign_id)
        .group_by(quarter)
    ).all()
    hours: dict[datetime, list[int]] = defaultdict(lambda: [0, 0])
    for bucket, opens, clicks in rows:
        start = quarter_start(bucket).astimezone(zone).replace(minute=0, second=0)
        hours[start][0] += int(opens)
        hours[start][1] += int(clicks)
    return [
        {"hour": start, "human_opens": opens, "human_clicks": clicks}
        for start, (opens, clicks) in sorted(hours.items())
    ]


def campaign_report(
    session: Session, campaign_id: int, zone: ZoneInfo = UTC_ZONE
) -> dict[str, Any]:
    campaign = session.get(Campaign, campaign_id)
    if campaign is None:
        raise NotFound(f"no campaign {campaign_id}")
    counts = _counts(session, campaign_id)
    variants = []
    for variant in _variants(session, campaign_id):
        for test in (True, False):
            if (variant.id, test) in counts:
                variants.append(
                    {
                        "variant_id": variant.id,
                        "name": variant.name,
                        "test": test,
                        **_with_rates(counts[(variant.id, test)]),
                    }
                )
    totals = _sum(list(counts.values()))
    if campaign.audience_count is not None:
        totals["audience"] = campaign.audience_count
    return {
        "totals": _with_rates(totals),
        "variants": variants,
        "links": _links(session, campaign_id),
        "over_time": _over_time(session, campaign_id, zone),
    }


CSV_COLUMNS = ["section", "variant", "group", "link", "url", *COUNTS, "open_rate"]
CSV_COLUMNS += ["click_rate", "click_to_open", "human_clicks", "share"]


def csv_rows(session: Session, campaign_id: int) -> Iterator[list[Any]]:
    """The report as CSV rows: totals, one row per variant and group, one per link."""
    report = campaign_report(session, campaign_id)

    def counts_row(section: str, variant: str, group: str, c: dict[str, Any]) -> list[Any]:
        return [
            section,
            variant,
            group,
            "",
            "",
            *[c[k] for k in COUNTS],
            round(c["open_rate"], 6),
            round(c["click_rate"], 6),
            round(c["click_to_open"], 6),
            "",
            "",
        ]

    yield CSV_COLUMNS
    yield counts_row("total", "", "", report["totals"])
    for v in report["variants"]:
        yield counts_row("variant", v["name"], "test" if v["test"] else "rest", v)
    for link in report["links"]:
        yield (
            ["link", link["template_version_id"], "", link["index"], link["url"]]
            + [""] * (len(COUNTS) + 3)
            + [link["human_clicks"], round(link["share"], 6)]
        )


_ANCHOR = re.compile(r'<a\b[^>]*href="#nurture-link-(\d+)"[^>]*>')


def click_map_html(session: Session, campaign_id: int, variant_id: int | None = None) -> str:
    """The variant's email rendered for the sample contact, each tracked link carrying a
    badge with its human click count and share (drawn over the link)."""
    variants = _variants(session, campaign_id)
    if not variants:
        raise NotFound(f"no campaign {campaign_id}")
    chosen = next((v for v in variants if v.id == variant_id), None) if variant_id else None
    if variant_id is not None and chosen is None:
        raise NotFound(f"no variant {variant_id} in campaign {campaign_id}")
    variant = chosen or variants[0]
    version = VersionCache(1).for_message(session, variant.template_version_id, variant.override_id)
    links = {
        link["index"]: link
        for link in _links(session, campaign_id)
        if link["template_version_id"] == variant.template_version_id
    }
    urls = TrackingUrls(
        open="",
        unsubscribe="#unsubscribe",
        preferences="#preferences",
        view="#view",
        links=[f"#nurture-link-{i}" for i in range(len(version.links))],
    )
    page = render_email(version, sample_contact(session), urls).html

    def badge(match: re.Match[str]) -> str:
        link = links.get(int(match.group(1)), {"human_clicks": 0, "share": 0.0, "url": ""})
        tag = match.group(0).replace(
            f'href="#nurture-link-{match.group(1)}"',
            f'href="{html_lib.escape(str(link["url"]))}" data-link="{match.group(1)}"',
        )
        label = f"{link['human_clicks']} clicks · {link['share'] * 100:.1f}%"
        return (
            f'<span class="nurture-click" style="position:relative;display:inline-block;'
            f'outline:2px solid #e8590c">{tag}<span style="position:absolute;top:-1.4em;'
            f"left:0;background:#e8590c;color:#fff;font:bold 11px sans-serif;"
            f'padding:1px 4px;border-radius:3px;white-space:nowrap">{label}</span>'
        )

    # The badge wrapper opens before the <a>; close it after the matching </a>.
    out = _ANCHOR.sub(badge, page)
    return re.sub(r"(<span class=\"nurture-click\"[^>]*>.*?</a>)", r"\1</span>", out, flags=re.S)


__all__ = [
    "campaign_email_counts",
    "campaign_report",
    "click_map_html",
    "csv_rows",
    "email_counts",
    "test_result",
]
