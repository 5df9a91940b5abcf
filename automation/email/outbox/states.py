"""The outbox: every email is a `messages` row before anything sends it, and a row moves
through its states only by `check_transition`.

    queued ──► sending ──► sent | failed | deferred | suppressed
       ▲          │ lease expired
       │          ▼
       └──── unknown   (resent only by an operator)

Senders claim due rows in batches with a lease (``FOR UPDATE SKIP LOCKED`` on PostgreSQL;
SQLite has a single writer, so the claiming UPDATE is atomic there as it is). Suppression,
the frequency cap and the per-sender-identity rate limit are applied while claiming, in the
claim's transaction.

Even set-based UPDATEs change `status` only through :func:`move` and :func:`move_each`,
which check every (from, to) pair against ``ALLOWED`` before the statement runs.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import Table, and_, bindparam, literal, or_, update
from sqlalchemy.orm import Session

from automation.db import one_of
from automation.email.models import Message, MessageStatus
from automation.errors import Conflict

S = MessageStatus
ALLOWED: dict[MessageStatus, frozenset[MessageStatus]] = {
    # FAILED without a lease: withdrawn (a cancelled campaign) after an earlier SMTP attempt.
    S.QUEUED: frozenset({S.SENDING, S.FAILED}),
    S.DEFERRED: frozenset({S.SENDING, S.FAILED}),
    # From a lease: the outcome, or back to queued for rows never handed to the relay.
    S.SENDING: frozenset({S.SENT, S.FAILED, S.DEFERRED, S.SUPPRESSED, S.UNKNOWN, S.QUEUED}),
    # An operator's resend; or the late lease holder reporting what really happened.
    S.UNKNOWN: frozenset({S.QUEUED, S.SENT, S.FAILED, S.DEFERRED}),
    S.SENT: frozenset(),
    S.FAILED: frozenset(),
    S.SUPPRESSED: frozenset(),
}
# Waiting for a sender to claim them (when due): what pausing parks and cancelling withdraws.
WAITING = (MessageStatus.QUEUED, MessageStatus.DEFERRED)
# Still to go out: waiting, or in a sender's hands right now. What must drain before the
# template or sender identity they go out with can be deleted.
OUTSTANDING = (*WAITING, MessageStatus.SENDING)


class IllegalTransition(Conflict):
    pass


def check_transition(old: MessageStatus, new: MessageStatus) -> None:
    """The one rule for status changes; every UPDATE of `status` goes through it."""
    if new not in ALLOWED[old]:
        raise IllegalTransition(f"a message cannot go from {old.value} to {new.value}")


def move(
    session: Session,
    ids: Sequence[int],
    to: MessageStatus,
    *,
    from_: Iterable[MessageStatus],
    where: Sequence[Any] = (),
    **values: Any,
) -> int:
    """Move the rows ``ids`` still in one of ``from_`` to ``to`` (one UPDATE); how many moved."""
    if not ids:
        for old in from_:
            check_transition(old, to)
        return 0
    return move_matching(
        session, to, from_=from_, where=[one_of(session, Message.id, ids), *where], **values
    )


def move_matching(
    session: Session,
    to: MessageStatus,
    *,
    from_: Iterable[MessageStatus],
    where: Sequence[Any],
    **values: Any,
) -> int:
    """Move every row matching ``where`` and still in one of ``from_`` to ``to`` (one
    set-based UPDATE); how many moved."""
    froms = tuple(from_)
    for old in froms:
        check_transition(old, to)
    result = session.execute(
        update(Message)
        .where(Message.status.in_(froms), *where)
        .values(status=to, **values)
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]  # CursorResult


def move_each(
    session: Session,
    rows: list[dict[str, Any]],
    to: MessageStatus,
    *,
    from_: Iterable[MessageStatus],
    owner: str | None,
    columns: Iterable[str],
    fixed: dict[str, Any] | None = None,
) -> None:
    """One executemany UPDATE, each row with its own values (keyed ``b_<column>``)."""
    froms = tuple(from_)
    for old in froms:
        check_transition(old, to)
    if not rows:
        return
    table = Message.__table__
    assert isinstance(table, Table)
    # Plain equalities: executemany cannot expand an IN list.
    conditions = [
        table.c.id == bindparam("b_id"),
        or_(*[table.c.status == literal(f.value) for f in froms]),
    ]
    if owner is not None:
        conditions.append(table.c.lease_owner == owner)
    values: dict[str, Any] = {"status": to.value, **(fixed or {})}
    values.update({c: bindparam(f"b_{c}") for c in columns})
    session.connection().execute(update(table).where(and_(*conditions)).values(values), rows)
