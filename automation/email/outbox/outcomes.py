"""Recording what happened to a group of messages: one statement per kind of outcome, only
for the lease holder's rows; then what follows from them (an ``email.sent`` event per
message sent, contacts' sent counts, hard bounces, slowing down a sender the relay pushed
back on)."""

from __future__ import annotations

import enum
import random
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from sqlalchemy import update
from sqlalchemy.orm import Session

from automation import clock
from automation.contacts.bounces import record_hard_bounce
from automation.contacts.models import Contact
from automation.contacts.suppressions import SuppressionReason, suppress
from automation.db import one_of
from automation.email.models import Message, MessageStatus, SenderIdentity
from automation.email.outbox.channel import NEEDS_SMTPUTF8
from automation.email.outbox.events import record_sent_events
from automation.email.outbox.states import move_each
from automation.reactions import IngestedEvent, react_to_events

MAX_ATTEMPTS = 8
BACKOFF_BASE = timedelta(minutes=1)
BACKOFF_MAX = timedelta(hours=4)
THROTTLE_FOR = timedelta(minutes=5)
# Rows whose outcome the lease holder may still write: a row an operator already resent
# (queued again) is not touched.
HELD_BY_SENDER = (MessageStatus.SENDING, MessageStatus.UNKNOWN)
_END_LEASE = {"lease_owner": None, "lease_expires_at": None}
_ONE_MORE_ATTEMPT = Message.__table__.c.attempts + 1


@dataclass(frozen=True)
class Outcome:
    message_id: int
    status: MessageStatus  # SENT, FAILED, DEFERRED, UNKNOWN, or QUEUED (never attempted)
    contact_id: int
    email: str
    attempts: int = 0
    sender_identity_id: int | None = None
    reason: str | None = None
    error: str | None = None
    smtp_response: str | None = None
    provider_id: str | None = None
    hard_bounce: bool = False
    slow_down: bool = False


def backoff(attempts: int) -> timedelta:
    """1, 2, 4 … minutes, at most four hours, with jitter so retries do not stampede."""
    delay = min(BACKOFF_BASE * (2 ** max(0, attempts - 1)), BACKOFF_MAX)
    return delay * random.uniform(0.8, 1.2)  # noqa: S311


def record_outcomes(
    session: Session,
    owner: str | None,
    outcomes: Sequence[Outcome],
    *,
    now: datetime | None = None,
    held: Sequence[MessageStatus] = HELD_BY_SENDER,
) -> None:
    """Write a group's results: one statement per kind of outcome. Only the lease holder's
    rows change (a row an operator already resent is not touched); ``owner=None`` with
    ``held=(UNKNOWN,)`` settles `unknown` rows (automation/email/reconcile.py)."""
    now = now or clock.now()
    by_status: dict[MessageStatus, list[Outcome]] = defaultdict(list)
    for outcome in outcomes:
        by_status[outcome.status].append(outcome)
    _record_sent(session, owner, by_status[MessageStatus.SENT], now, held)
    record_sent_events(session, [o.message_id for o in by_status[MessageStatus.SENT]])
    exhausted = _record_deferred(session, owner, by_status[MessageStatus.DEFERRED], now, held)
    failed = by_status[MessageStatus.FAILED] + exhausted
    _record_failed(session, owner, failed, now, held)
    _record_unknown(session, owner, by_status[MessageStatus.UNKNOWN])
    _record_requeued(session, owner, by_status[MessageStatus.QUEUED])
    _count_sent(session, [o.contact_id for o in by_status[MessageStatus.SENT]])
    _record_hard_bounces(session, [o for o in failed if o.hard_bounce], now)
    _slow_down(session, {o.sender_identity_id for o in outcomes if o.slow_down}, now)


def _record_sent(
    session: Session,
    owner: str | None,
    sent: list[Outcome],
    now: datetime,
    held: Sequence[MessageStatus],
) -> None:
    move_each(
        session,
        [
            {
                "b_id": o.message_id,
                "b_smtp_response": o.smtp_response,
                "b_provider_message_id": o.provider_id,
            }
            for o in sent
        ],
        MessageStatus.SENT,
        from_=held,
        owner=owner,
        columns=["smtp_response", "provider_message_id"],
        fixed={
            **_END_LEASE,
            "sent_at": now,
            "attempts": _ONE_MORE_ATTEMPT,
            "reason": None,
            "error": None,
        },
    )


def _record_deferred(
    session: Session,
    owner: str | None,
    deferred: list[Outcome],
    now: datetime,
    held: Sequence[MessageStatus],
) -> list[Outcome]:
    """Schedule the retries with backoff; returns those out of attempts, as failures (a
    message held for SMTPUTF8 never runs out: nothing was tried)."""
    retry = [o for o in deferred if o.attempts + 1 < MAX_ATTEMPTS or o.reason == NEEDS_SMTPUTF8]
    move_each(
        session,
        [
            {
                "b_id": o.message_id,
                "b_next_attempt_at": now + backoff(o.attempts + 1),
                "b_reason": o.reason or "temporary_failure",
                "b_error": o.error,
                "b_smtp_response": o.smtp_response,
            }
            for o in retry
        ],
        MessageStatus.DEFERRED,
        from_=held,
        owner=owner,
        columns=["next_attempt_at", "reason", "error", "smtp_response"],
        fixed={**_END_LEASE, "attempts": _ONE_MORE_ATTEMPT},
    )
    return [
        replace(
            o,
            status=MessageStatus.FAILED,
            reason="retries_exhausted",
            provider_id=None,
            hard_bounce=False,
            slow_down=False,
        )
        for o in deferred
        if o.attempts + 1 >= MAX_ATTEMPTS and o.reason != NEEDS_SMTPUTF8
    ]


def _record_failed(
    session: Session,
    owner: str | None,
    failed: list[Outcome],
    now: datetime,
    held: Sequence[MessageStatus],
) -> None:
    move_each(
        session,
        [
            {
                "b_id": o.message_id,
                "b_reason": o.reason or "rejected",
                "b_error": o.error,
                "b_smtp_response": o.smtp_response,
                "b_bounced_at": now if o.hard_bounce else None,
            }
            for o in failed
        ],
        MessageStatus.FAILED,
        from_=held,
        owner=owner,
        columns=["reason", "error", "smtp_response", "bounced_at"],
        fixed={**_END_LEASE, "attempts": _ONE_MORE_ATTEMPT},
    )


def _record_unknown(session: Session, owner: str | None, unknown: list[Outcome]) -> None:
    move_each(
        session,
        [{"b_id": o.message_id, "b_error": o.error} for o in unknown],
        MessageStatus.UNKNOWN,
        from_=[MessageStatus.SENDING],
        owner=owner,
        columns=["error"],
        fixed={**_END_LEASE, "reason": "outcome_unknown"},
    )


def _record_requeued(session: Session, owner: str | None, never_tried: list[Outcome]) -> None:
    """Rows never handed to the relay (the lease ran short) go back to the queue as they were."""
    move_each(
        session,
        [{"b_id": o.message_id} for o in never_tried],
        MessageStatus.QUEUED,
        from_=[MessageStatus.SENDING],
        owner=owner,
        columns=[],
        fixed=_END_LEASE,
    )


def _count_sent(session: Session, contact_ids: list[int]) -> None:
    """contacts.emails_sent += messages sent, one UPDATE per distinct count."""
    by_count: dict[int, list[int]] = defaultdict(list)
    for contact_id, count in Counter(contact_ids).items():
        by_count[count].append(contact_id)
    for count, ids in by_count.items():
        session.execute(
            update(Contact)
            .where(one_of(session, Contact.id, ids))
            .values(emails_sent=Contact.emails_sent + count)
            .execution_options(synchronize_session=False)
        )


def _record_hard_bounces(session: Session, bounced: list[Outcome], now: datetime) -> None:
    """The relay refused the address for good: see automation/contacts/bounces.py."""
    events: list[IngestedEvent] = []
    for outcome in bounced:
        contact = session.get(Contact, outcome.contact_id)
        if contact is None:  # erased meanwhile: its address stays listed all the same
            suppress(session, [outcome.email], SuppressionReason.BOUNCED, source="smtp", now=now)
            continue
        event = record_hard_bounce(
            session,
            contact,
            outcome.email,
            message_id=outcome.message_id,
            diagnostic=outcome.smtp_response,
            source="smtp",
            occurred_at=now,
            now=now,
        )
        if event is not None:
            events.append(event)
    react_to_events(session, events)


class Feedback(enum.Enum):
    """What a recipient's side reported about a message after it went out."""

    BOUNCED = "bounced_at"
    COMPLAINED = "complained_at"
    UNSUBSCRIBED = "unsubscribed_at"  # the first time counts: a second click changes nothing


def note_feedback(session: Session, message_id: int, feedback: Feedback, *, now: datetime) -> None:
    """Stamp the message with a report about it (its status stays what it is)."""
    column = Message.__table__.c[feedback.value]
    stmt = update(Message).where(Message.id == message_id)
    if feedback is Feedback.UNSUBSCRIBED:
        stmt = stmt.where(column.is_(None))
    session.execute(stmt.values({column: now}))


def _slow_down(session: Session, identity_ids: set[int | None], now: datetime) -> None:
    for identity_id in identity_ids - {None}:
        identity = session.get(SenderIdentity, identity_id)
        if identity is None:
            continue
        current = identity.throttle_factor
        if identity.throttled_until is None or identity.throttled_until <= now:
            current = 1.0
        identity.throttle_factor = max(0.05, current / 2)
        identity.throttled_until = now + THROTTLE_FOR
    session.flush()
