"""The dashboard: senders the complaint guard paused, email engagement and contact growth
over time, and what just happened."""

from __future__ import annotations

from typing import Any

from flask import render_template, request

from automation import overview
from automation.contacts import activity
from automation.ops.backlog import paused_senders
from web.auth import login_required
from web.database import db, nurture
from web.ui.blueprint import bp

RANGES = (7, 30, 90)
LABELS = {
    "email.sent": "Sent",
    "email.opened": "Opens",
    "email.clicked": "Clicks",
    "email.unsubscribed": "Unsubscribes",
    "contacts.created": "New contacts",
}


@bp.route("/")
@login_required()
def dashboard() -> Any:
    session = db()
    days = request.args.get("days", type=int)
    days = days if days in RANGES else 30
    engagement = activity.daily_event_counts(session, activity.ENGAGEMENT_EVENTS, days=days)
    growth = activity.daily_new_contacts(session, days=days)
    return render_template(
        "dashboard.html",
        days=days,
        ranges=RANGES,
        overview=activity.overview(session, days=7),
        engagement=engagement,
        growth=growth,
        top_events=activity.top_event_names(session, days=days),
        recent_contacts=activity.recent_contacts(session),
        recent_events=activity.recent_events(session),
        live_workflows=overview.live_workflows(session),
        recent_campaigns=overview.recent_campaigns(session),
        paused=paused_senders(session, nurture().settings),
        labels=LABELS,
        chart_data={
            "labels": LABELS,
            "engagement": engagement.as_json(),
            "growth": growth.as_json(),
        },
    )
