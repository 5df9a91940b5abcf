"""The dashboard: senders the complaint guard paused, email engagement and contact growth
over time, and what just happened. Every figure counts the chosen period (7, 30 or 90
days, today included) in the account time zone; rates follow their one definition
(automation/email/rates.py), so a campaign's rates here are its report's."""

from __future__ import annotations

from typing import Any

from flask import render_template, request

from automation import overview
from automation.contacts import activity
from automation.ops.backlog import paused_senders
from web.auth import login_required
from web.database import db, nurture
from web.ui.blueprint import bp
from web.ui.zone import request_zone

RANGES = (7, 30, 90)
LABELS = {
    "email.sent": "Sent",
    "email.opened": "Opens",
    "email.clicked": "Clicks",
    "email.unsubscribed": "Unsubscribes",
    "contacts.created": "New contacts",
}
# The daily engagement series from events; "Sent" comes from the messages themselves.
EVENT_SERIES = ("email.opened", "email.clicked", "email.unsubscribed")


@bp.route("/")
@login_required()
def dashboard() -> Any:
    session = db()
    days = request.args.get("days", type=int)
    days = days if days in RANGES else 30
    zone = request_zone()
    day_list, since = activity.day_range(days, zone)
    events = activity.daily_event_counts(session, EVENT_SERIES, days=days, zone=zone)
    engagement = activity.DailySeries(
        day_list,
        {"email.sent": overview.daily_sends(session, days=days, zone=zone), **events.series},
    )
    growth = activity.daily_new_contacts(session, days=days, zone=zone)
    return render_template(
        "dashboard.html",
        days=days,
        ranges=RANGES,
        overview=activity.overview(session, since=since),
        email=overview.email_period(session, since=since),
        engagement=engagement,
        growth=growth,
        top_events=activity.top_event_names(session, since=since),
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
