from __future__ import annotations

from datetime import timedelta
from typing import Any

from flask import render_template
from sqlalchemy import func, select

from automation import clock
from automation.contacts.models import Contact, ContactStatus, Event
from web.auth import login_required
from web.database import db
from web.ui import bp


@bp.route("/")
@login_required()
def dashboard() -> Any:
    session = db()
    week_ago = clock.now() - timedelta(days=7)
    by_status = dict(
        session.execute(select(Contact.status, func.count()).group_by(Contact.status)).all()
    )
    stats = {
        "contacts": sum(by_status.values()),
        "subscribed": by_status.get(ContactStatus.SUBSCRIBED, 0),
        "new_this_week": session.scalar(select(func.count()).where(Contact.created_at >= week_ago))
        or 0,
        "events_this_week": session.scalar(
            select(func.count()).select_from(Event).where(Event.occurred_at >= week_ago)
        )
        or 0,
    }
    top_events = session.execute(
        select(Event.name, func.count())
        .where(Event.occurred_at >= week_ago)
        .group_by(Event.name)
        .order_by(func.count().desc())
        .limit(8)
    ).all()
    return render_template(
        "dashboard.html", stats=stats, by_status=by_status, top_events=top_events
    )
