"""Holding waiting messages back and taking them back, for whoever queued them (a paused or
cancelled campaign). A parked message keeps its status (queued or deferred) and waits with
``next_attempt_at = PARKED``, far beyond any claim; unparking gives it a send time again.
Rows a sender holds right now are never touched: they finish as they are, and the caller
parks or withdraws them again once they are back (its tick runs more often than the
shortest retry backoff)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, delete, func, update
from sqlalchemy.orm import Session

from automation.email.models import Message, MessageStatus
from automation.email.outbox.states import WAITING, move_matching

PARKED = datetime(9999, 1, 1, tzinfo=UTC)


def park(session: Session, scope: ColumnElement[bool]) -> int:
    """Park the waiting messages matching ``scope``; how many were not parked yet."""
    result = session.execute(
        update(Message)
        .where(scope, Message.status.in_(WAITING), Message.next_attempt_at != PARKED)
        .values(next_attempt_at=PARKED)
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]  # CursorResult


def unpark(
    session: Session, scope: ColumnElement[bool], *, send_at: ColumnElement[Any], now: datetime
) -> None:
    """Give the parked messages matching ``scope`` their send time back: ``send_at``, an
    expression that may use the message's columns (each recipient's own time), or ``now``
    where it is null. A waiting message of ``scope`` whose time has passed goes now."""
    waiting = (scope, Message.status.in_(WAITING))
    session.execute(
        update(Message)
        .where(*waiting, Message.next_attempt_at == PARKED)
        .values(next_attempt_at=func.coalesce(send_at, now))
        .execution_options(synchronize_session=False)
    )
    session.execute(
        update(Message)
        .where(*waiting, Message.next_attempt_at < now)
        .values(next_attempt_at=now)
        .execution_options(synchronize_session=False)
    )


def withdraw(session: Session, scope: ColumnElement[bool]) -> tuple[int, int]:
    """Take back the waiting (queued or deferred) messages matching ``scope``, e.g. those
    of a cancelled campaign. A row never handed to a relay (no attempt yet; a frequency
    cap deferral is not an attempt) is deleted: nothing was sent, nothing to keep. A row
    that already had an SMTP conversation (a temporary failure, or an operator's resend
    of an `unknown` one) is kept as the record of it and ends `failed` with reason
    ``withdrawn``, never retried. Returns (deleted, withdrawn)."""
    deleted = session.execute(
        delete(Message)
        .where(scope, Message.status.in_(WAITING), Message.attempts == 0)
        .execution_options(synchronize_session=False)
    )
    stopped = move_matching(
        session,
        MessageStatus.FAILED,
        from_=WAITING,
        where=[scope, Message.attempts > 0],
        reason="withdrawn",
    )
    return int(deleted.rowcount), stopped  # type: ignore[attr-defined]  # CursorResult
