"""Sunset policy: contacts who have not engaged (as a person, not a machine) over N sends
or N days are marked inactive and left out of marketing sends; engaging again (a human
open or click, see ingest.py) clears the mark."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, func, or_, select, update
from sqlalchemy.orm import Session

from automation import clock
from automation.contacts.models import Contact, ContactStatus
from automation.email.models import Message


def _not_after(column: Any, cutoff: datetime) -> ColumnElement[bool]:
    return or_(column.is_(None), column < cutoff)


def apply_sunset(
    session: Session, *, max_sends: int, max_days: int, now: datetime | None = None
) -> int:
    """Mark inactive every subscribed contact past either limit; one UPDATE. Returns the
    number marked. A limit of 0 is off."""
    if max_sends <= 0 and max_days <= 0:
        return 0
    now = now or clock.now()
    conditions = []
    if max_days > 0:
        cutoff = now - timedelta(days=max_days)
        # Silence counts from the first marketing email: a contact who has had mail for
        # N days (not one on the list for N days whose first email went out yesterday).
        mailed_by_cutoff = (
            select(Message.id)
            .where(
                Message.contact_id == Contact.id,
                Message.marketing.is_(True),
                Message.sent_at <= cutoff,
            )
            .exists()
        )
        conditions.append(
            and_(
                mailed_by_cutoff,
                Contact.created_at < cutoff,
                _not_after(Contact.last_open_at, cutoff),
                _not_after(Contact.last_click_at, cutoff),
            )
        )
    if max_sends > 0:
        sends_since = (
            select(func.count())
            .select_from(Message)
            .where(
                Message.contact_id == Contact.id,
                Message.marketing.is_(True),
                Message.sent_at.is_not(None),
                or_(Contact.last_open_at.is_(None), Message.sent_at > Contact.last_open_at),
                or_(Contact.last_click_at.is_(None), Message.sent_at > Contact.last_click_at),
            )
            .scalar_subquery()
        )
        conditions.append(sends_since >= max_sends)
    result = session.execute(
        update(Contact)
        .where(
            Contact.inactive_since.is_(None),
            Contact.status == ContactStatus.SUBSCRIBED,
            or_(*conditions),
        )
        .values(inactive_since=now)
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)
