"""How far behind the periodic work is, read from the rows themselves: the oldest due
enrolment the workflow tick has not taken yet, the oldest due message no sender has
claimed, and the outbox by state. Metrics (at scrape time) and readiness share these."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from automation.email.models import Message, MessageStatus
from automation.workflows.models import Enrollment, EnrollmentStatus

# Rows the outbox still owes an outcome for (final states are left out: they only grow).
OPEN_STATES = (
    MessageStatus.QUEUED,
    MessageStatus.DEFERRED,
    MessageStatus.SENDING,
    MessageStatus.UNKNOWN,
)


def _seconds_behind(oldest: datetime | None, now: datetime) -> float:
    return max(0.0, (now - oldest).total_seconds()) if oldest is not None else 0.0


def workflow_lag(session: Session, now: datetime) -> float:
    """Seconds the oldest due, unleased enrolment has waited for a tick (0 when none)."""
    oldest = session.scalar(
        select(func.min(Enrollment.next_run_at)).where(
            Enrollment.status == EnrollmentStatus.ACTIVE,
            Enrollment.next_run_at <= now,
            or_(Enrollment.lease_until.is_(None), Enrollment.lease_until < now),
        )
    )
    return _seconds_behind(oldest, now)


def outbox_lag(session: Session, now: datetime) -> float:
    """Seconds the oldest due, unclaimed message has waited for a sender (0 when none)."""
    oldest = session.scalar(
        select(func.min(Message.next_attempt_at)).where(
            Message.status.in_((MessageStatus.QUEUED, MessageStatus.DEFERRED)),
            Message.next_attempt_at <= now,
        )
    )
    return _seconds_behind(oldest, now)


def outbox_backlog(session: Session) -> dict[str, int]:
    """Open messages by state (every open state present, zeros included)."""
    counts = dict(
        session.execute(
            select(Message.status, func.count())
            .where(Message.status.in_(OPEN_STATES))
            .group_by(Message.status)
        ).all()
    )
    return {state.value: int(counts.get(state, 0)) for state in OPEN_STATES}
