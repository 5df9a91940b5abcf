"""What an operator watches: the outbox backlog (due messages nobody has claimed yet, the
oldest one's wait), tick lag (how long the oldest due enrolment or campaign step has been
waiting for a tick), the senders the complaint guard paused (identities and the default
sender; their count is what the banner on every page reads), and the tracking
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
from automation.email.identities import default_sender
from automation.email.models import Message, MessageStatus, SenderIdentity
from automation.email.outbox import OUTSTANDING, WAITING
from automation.policy import ROW_ID, SendingPolicy, default_sender_paused_at
from automation.tracking.hits import QUEUES, SpoolBacklog, hit_spool
from automation.workflows.models import Enrollment, EnrollmentStatus

# Rows the outbox still owes an outcome for (final states only grow).
OPEN_STATES = (*OUTSTANDING, MessageStatus.UNKNOWN)


@dataclass(frozen=True)
class Backlog:
    by_status: dict[str, int]  # every status, 0 included
    due: int  # queued or deferred with next_attempt_at <= now: a sender should take them
    oldest_due_seconds: float  # how long the oldest due message has waited (0: none)
    paused_identity_messages: int  # waiting behind a paused sender (identity or default)

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
    if default_sender_paused_at(session) is not None:
        paused = (paused or 0) + _waiting_for_default(session)
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


@dataclass(frozen=True)
class PausedSender:
    identity_id: int | None  # None: the default sender (NURTURE_DEFAULT_SENDER)
    name: str
    from_email: str
    paused_at: datetime
    reason: str | None
    waiting: int  # messages queued or deferred behind it


def _waiting_for_default(session: Session) -> int:
    return int(
        session.scalar(
            select(func.count()).where(
                Message.sender_identity_id.is_(None), Message.status.in_(WAITING)
            )
        )
        or 0
    )


def paused_senders(session: Session, settings: Settings) -> list[PausedSender]:
    """Paused senders, the longest-paused first, each with how many messages wait behind it."""
    waiting = (
        select(func.count())
        .where(Message.sender_identity_id == SenderIdentity.id, Message.status.in_(WAITING))
        .scalar_subquery()
    )
    rows = session.execute(
        select(SenderIdentity, waiting).where(SenderIdentity.paused_at.is_not(None))
    ).all()
    paused = [
        PausedSender(i.id, i.name, i.from_email, i.paused_at, i.paused_reason, int(n))
        for i, n in rows
        if i.paused_at is not None
    ]
    row = session.get(SendingPolicy, ROW_ID)
    if row is not None and row.default_sender_paused_at is not None:
        sender = default_sender(settings.default_sender)
        paused.append(
            PausedSender(
                None,
                f"Default sender ({sender.from_name})",
                sender.from_email,
                row.default_sender_paused_at,
                row.default_sender_paused_reason,
                _waiting_for_default(session),
            )
        )
    return sorted(paused, key=lambda p: p.paused_at)


def paused_sender_count(session: Session) -> int:
    """How many senders are paused, in one cheap statement: the layout asks on every page
    (two index-free scans of tiny tables: sender identities and the one policy row)."""
    identities = (
        select(func.count())
        .select_from(SenderIdentity)
        .where(SenderIdentity.paused_at.is_not(None))
        .scalar_subquery()
    )
    default = (
        select(func.count())
        .select_from(SendingPolicy)
        .where(SendingPolicy.default_sender_paused_at.is_not(None))
        .scalar_subquery()
    )
    return int(session.scalar(select(identities + default)) or 0)


def spool_backlogs(settings: Settings) -> dict[str, SpoolBacklog]:
    """Tracking records spooled on this machine and not yet forwarded to Redis (or, in the
    embedded default, drained), by queue: "hits" (opens, clicks) and "site" (site events).
    A growing one means no forwarder runs here, or Redis is unreachable."""
    return {name: hit_spool(settings, name).backlog() for name in QUEUES}


__all__ = [
    "OPEN_STATES",
    "Backlog",
    "PausedSender",
    "SpoolBacklog",
    "TickLag",
    "outbox_backlog",
    "paused_sender_count",
    "paused_senders",
    "spool_backlogs",
    "tick_lag",
]
