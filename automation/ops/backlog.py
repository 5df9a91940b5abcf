"""What an operator watches: the outbox backlog (due messages nobody has claimed yet, the
oldest one's wait), tick lag (how long the oldest due enrolment or campaign step has been
waiting for a tick), the sender identities the complaint guard paused, and the tracking
spools of this machine. Plain reads; the database figures are computed from rows, so every
process sees the same truth, while a spool is per machine (each web machine reports its
own). The Operations page, /readyz and the /metrics gauges all read them here."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from automation import clock
from automation.campaigns.models import Campaign, CampaignStatus
from automation.config import Settings
from automation.email.models import Message, MessageStatus, SenderIdentity
from automation.tracking.hits import QUEUES, SpoolBacklog, hit_spool
from automation.workflows.models import Enrollment, EnrollmentStatus

WAITING = (MessageStatus.QUEUED, MessageStatus.DEFERRED)
# Rows the outbox still owes an outcome for (final states only grow).
OPEN_STATES = (*WAITING, MessageStatus.SENDING, MessageStatus.UNKNOWN)


@dataclass(frozen=True)
class Backlog:
    by_status: dict[str, int]  # every status, 0 included
    due: int  # queued or deferred with next_attempt_at <= now: a sender should take them
    oldest_due_seconds: float  # how long the oldest due message has waited (0: none)
    paused_identity_messages: int  # waiting behind a paused sender identity

    @property
    def open_states(self) -> dict[str, int]:
        return {state.value: self.by_status[state.value] for state in OPEN_STATES}


@dataclass(frozen=True)
class TickLag:
    workflows_seconds: float  # oldest active enrolment past its next_run_at
    workflows_due: int
    campaigns_seconds: float  # oldest scheduled/testing campaign past its next_run_at
    campaigns_due: int


def _age(now: datetime, then: datetime | None) -> float:
    return max((now - then).total_seconds(), 0.0) if then is not None else 0.0


def outbox_backlog(session: Session, *, now: datetime | None = None) -> Backlog:
    now = now or clock.now()
    counts = dict.fromkeys([s.value for s in MessageStatus], 0)
    for status, n in session.execute(select(Message.status, func.count()).group_by(Message.status)):
        counts[MessageStatus(status).value] = int(n)
    due_scope = (Message.status.in_(WAITING), Message.next_attempt_at <= now)
    due, oldest = session.execute(
        select(func.count(), func.min(Message.next_attempt_at)).where(*due_scope)
    ).one()
    paused = session.scalar(
        select(func.count())
        .select_from(Message)
        .join(SenderIdentity, SenderIdentity.id == Message.sender_identity_id)
        .where(Message.status.in_(WAITING), SenderIdentity.paused_at.is_not(None))
    )
    return Backlog(counts, int(due or 0), _age(now, oldest), int(paused or 0))


def tick_lag(session: Session, *, now: datetime | None = None) -> TickLag:
    now = now or clock.now()
    w_due, w_oldest = session.execute(
        select(func.count(), func.min(Enrollment.next_run_at)).where(
            Enrollment.status == EnrollmentStatus.ACTIVE,
            Enrollment.next_run_at <= now,
        )
    ).one()
    c_due, c_oldest = session.execute(
        select(func.count(), func.min(Campaign.next_run_at)).where(
            Campaign.status.in_((CampaignStatus.SCHEDULED, CampaignStatus.TESTING)),
            Campaign.next_run_at <= now,
        )
    ).one()
    return TickLag(_age(now, w_oldest), int(w_due or 0), _age(now, c_oldest), int(c_due or 0))


def paused_senders(session: Session) -> list[tuple[SenderIdentity, int]]:
    """Paused identities, each with how many messages wait behind it."""
    waiting = (
        select(func.count())
        .where(Message.sender_identity_id == SenderIdentity.id, Message.status.in_(WAITING))
        .scalar_subquery()
    )
    rows = session.execute(
        select(SenderIdentity, waiting)
        .where(SenderIdentity.paused_at.is_not(None))
        .order_by(SenderIdentity.paused_at)
    ).all()
    return [(identity, int(n)) for identity, n in rows]


def spool_backlogs(settings: Settings) -> dict[str, SpoolBacklog]:
    """Tracking records spooled on this machine and not yet forwarded to Redis (or, in the
    embedded default, drained), by queue: "hits" (opens, clicks) and "site" (site events).
    A growing one means no forwarder runs here, or Redis is unreachable."""
    return {name: hit_spool(settings, name).backlog() for name in QUEUES}


__all__ = [
    "OPEN_STATES",
    "Backlog",
    "SpoolBacklog",
    "TickLag",
    "outbox_backlog",
    "paused_senders",
    "spool_backlogs",
    "tick_lag",
]
