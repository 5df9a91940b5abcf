"""Claiming: lease a batch of due messages for one sender process, hold back those that
must not go (screening.py), and load what rendering needs, all in one short transaction.
Leases that run out become `unknown` (:func:`expire_leases`)."""

from __future__ import annotations

import random
import uuid
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Row, delete, func, select, update
from sqlalchemy.orm import Session

from automation import clock
from automation.config import Settings
from automation.contacts.models import Contact
from automation.contacts.suppressions import suppression_reasons
from automation.db import dialect_insert, is_postgres, one_of
from automation.email.context import CONTACT_COLUMNS, contact_context, field_types, load_tags
from automation.email.models import Message, MessageStatus, SenderIdentity, SendWindow
from automation.email.outbox.screening import (
    Hold,
    deleted_versions,
    frequency_capped,
    hold_reason,
)
from automation.email.outbox.states import check_transition, move, move_each
from automation.email.render import CompiledVersion, VersionCache
from automation.policy import default_sender_paused_at, effective_settings

# A sender takes the next message of its batch only while fewer than this many taken ones
# lack a committed outcome (sending.py): of a dead sender's rows, only this many can have
# reached the relay.
IN_FLIGHT = 16


@dataclass(frozen=True)
class Claimed:
    """One message to render and send, with everything needed to do it."""

    id: int
    nonce: int
    contact_id: int
    email: str
    version_id: int
    sender_identity_id: int | None
    marketing: bool
    attempts: int
    campaign_id: int | None
    workflow_node_id: str | None
    workflow_name: str | None
    campaign_name: str | None
    contact: dict[str, Any]
    workflow_id: int | None = None
    override_id: int | None = None  # a campaign variant's subject / preheader


@dataclass
class Batch:
    owner: str
    lease_expires_at: datetime
    messages: list[Claimed] = field(default_factory=list)
    versions: dict[int, CompiledVersion] = field(default_factory=dict)
    held: Counter[str] = field(default_factory=Counter)  # suppressed/capped/failed at claim


# --- the per-identity rate limit ------------------------------------------------------


def _effective_limit(identity: SenderIdentity, now: datetime) -> int:
    factor = 1.0
    if identity.throttled_until is not None and identity.throttled_until > now:
        factor = identity.throttle_factor
    return max(1, int(identity.max_per_minute * factor))


def _reserve(session: Session, identity: SenderIdentity, want: int, now: datetime) -> int:
    """Take up to ``want`` sends from this minute's allowance of the identity. The UPSERT
    locks the window row until commit, so concurrent senders share one count."""
    window = now.replace(second=0, microsecond=0)
    total = session.scalar(
        dialect_insert(session, SendWindow)
        .values(sender_identity_id=identity.id, window_start=window, claimed=want)
        .on_conflict_do_update(
            index_elements=["sender_identity_id", "window_start"],
            set_={"claimed": SendWindow.claimed + want},
        )
        .returning(SendWindow.claimed)
    )
    granted = max(0, min(want, _effective_limit(identity, now) - (int(total or 0) - want)))
    return granted


def _give_back(session: Session, identity_id: int, now: datetime, count: int) -> None:
    if count > 0:
        session.execute(
            update(SendWindow)
            .where(
                SendWindow.sender_identity_id == identity_id,
                SendWindow.window_start == now.replace(second=0, microsecond=0),
            )
            .values(claimed=SendWindow.claimed - count)
        )


def _claim_ids(
    session: Session,
    identity_id: int | None,
    limit: int,
    owner: str,
    lease_until: datetime,
    now: datetime,
) -> list[int]:
    """Lease up to ``limit`` due rows of one sender identity: retries first, then new."""
    claimed: list[int] = []
    for status in (MessageStatus.DEFERRED, MessageStatus.QUEUED):
        want = limit - len(claimed)
        if want <= 0:
            break
        check_transition(status, MessageStatus.SENDING)
        identity = (
            Message.sender_identity_id.is_(None)
            if identity_id is None
            else Message.sender_identity_id == identity_id
        )
        due = (
            select(Message.id)
            .where(Message.status == status, identity, Message.next_attempt_at <= now)
            .order_by(Message.next_attempt_at)
            .limit(want)
        )
        if is_postgres(session):
            # Concurrent senders skip each other's rows instead of waiting for them.
            due = due.with_for_update(skip_locked=True)
        # Two statements on purpose: inside `UPDATE … WHERE id IN (SELECT … LIMIT n)`
        # PostgreSQL may re-run the subquery per row and so update more than n rows.
        ids = list(session.scalars(due))
        if not ids:
            continue
        rows = session.execute(
            update(Message)
            .where(one_of(session, Message.id, ids), Message.status == status)
            .values(status=MessageStatus.SENDING, lease_owner=owner, lease_expires_at=lease_until)
            .returning(Message.id)
            .execution_options(synchronize_session=False)
        )
        claimed.extend(rows.scalars())
    return claimed


def _senders_in_turn(session: Session) -> list[SenderIdentity | None]:
    """The senders that may send now, in a random order so no identity starves the
    others. None is the default sender (messages with no identity), unless the complaint
    guard paused it."""
    identities = list(
        session.scalars(select(SenderIdentity).where(SenderIdentity.paused_at.is_(None)))
    )
    default: list[SenderIdentity | None] = (
        [] if default_sender_paused_at(session) is not None else [None]
    )
    order = [*default, *identities]
    random.shuffle(order)
    return order


def _lease_due(session: Session, batch: Batch, limit: int, now: datetime) -> list[int]:
    """Lease up to ``limit`` due rows across the senders, each within its rate limit."""
    ids: list[int] = []
    for identity in _senders_in_turn(session):
        want = limit - len(ids)
        if want <= 0:
            break
        if identity is None:
            ids += _claim_ids(session, None, want, batch.owner, batch.lease_expires_at, now)
            continue
        granted = _reserve(session, identity, want, now)
        got = (
            _claim_ids(session, identity.id, granted, batch.owner, batch.lease_expires_at, now)
            if granted
            else []
        )
        _give_back(session, identity.id, now, want - len(got))
        ids += got
    return ids


def _claimed_rows(session: Session, ids: list[int]) -> Sequence[Any]:
    """The leased rows with their contact: what screening and rendering need, one query."""
    return session.execute(
        select(
            Message.id,
            Message.token_nonce,
            Message.contact_id,
            Message.template_version_id,
            Message.sender_identity_id,
            Message.marketing,
            Message.priority,
            Message.attempts,
            Message.campaign_id,
            Message.workflow_id,
            Message.workflow_node_id,
            Message.workflow_name,
            Message.campaign_name,
            Message.override_id,
            Contact.status,
            Contact.inactive_since,
            *CONTACT_COLUMNS,  # what rendering needs, in the same query
        )
        .join(Contact, Contact.id == Message.contact_id)
        .where(one_of(session, Message.id, ids))
        .order_by(Message.id)
    ).all()


@dataclass
class _Screened:
    sendable: list[Row[Any]] = field(default_factory=list)
    held: dict[Hold, list[int]] = field(default_factory=lambda: defaultdict(list))
    # Over the frequency cap with action "defer": message id → when it may go.
    deferred: dict[int, datetime] = field(default_factory=dict)


def _screen(
    session: Session, batch: Batch, rows: Sequence[Row[Any]], settings: Settings, now: datetime
) -> _Screened:
    """Sort the claimed rows into sendable, held (with their end state) and deferred."""
    unusable = deleted_versions(session, batch.versions.keys())
    unusable |= {r.template_version_id for r in rows} - batch.versions.keys()
    listed = suppression_reasons(session, {r.email for r in rows})
    holds = {row.id: hold_reason(row, listed, unusable) for row in rows}
    policy = effective_settings(session, settings)  # the admin's saved cap, if any
    capped = frequency_capped(session, [r for r in rows if holds[r.id] is None], policy, now)
    screened = _Screened()
    for row in rows:
        hold = holds[row.id]
        if hold is not None:
            screened.held[hold].append(row.id)
        elif row.id in capped:
            if policy.frequency_cap_action == "skip":
                screened.held[(MessageStatus.SUPPRESSED, "frequency_cap")].append(row.id)
            else:
                screened.deferred[row.id] = capped[row.id]
        else:
            screened.sendable.append(row)
    return screened


def _release_held(session: Session, batch: Batch, screened: _Screened) -> None:
    """End the held rows' leases: each to its end state, the capped ones deferred."""
    free: dict[str, Any] = {"lease_owner": None, "lease_expires_at": None}
    for (status, reason), message_ids in screened.held.items():
        move(session, message_ids, status, from_=[MessageStatus.SENDING], reason=reason, **free)
        batch.held[reason] += len(message_ids)
    move_each(
        session,
        [{"b_id": i, "b_next_attempt_at": at} for i, at in screened.deferred.items()],
        MessageStatus.DEFERRED,
        from_=[MessageStatus.SENDING],
        owner=batch.owner,
        columns=["next_attempt_at"],
        fixed={"reason": "frequency_cap", **free},
    )
    if screened.deferred:
        batch.held["frequency_cap"] += len(screened.deferred)


def _to_send(session: Session, rows: list[Row[Any]]) -> list[Claimed]:
    """The sendable rows with their contact's rendering context (fields, tags)."""
    types = field_types(session)
    tags = load_tags(session, {r.contact_id for r in rows})
    contexts = {
        r.contact_id: contact_context(dict(r._mapping), tags[r.contact_id], types) for r in rows
    }
    return [
        Claimed(
            id=r.id,
            nonce=r.token_nonce,
            contact_id=r.contact_id,
            email=r.email,
            version_id=r.template_version_id,
            sender_identity_id=r.sender_identity_id,
            marketing=r.marketing,
            attempts=r.attempts,
            campaign_id=r.campaign_id,
            workflow_node_id=r.workflow_node_id,
            workflow_name=r.workflow_name,
            campaign_name=r.campaign_name,
            contact=contexts[r.contact_id],
            workflow_id=r.workflow_id,
            override_id=r.override_id,
        )
        for r in rows
    ]


def claim_batch(
    session: Session,
    *,
    settings: Settings,
    cache: VersionCache,
    limit: int | None = None,
    now: datetime | None = None,
) -> Batch:
    """Lease a batch of due messages, hold back those that must not go (suppressed,
    capped, template deleted, bad address) and load what rendering needs."""
    now = now or clock.now()
    batch = Batch(uuid.uuid4().hex, now + timedelta(seconds=settings.send_lease_seconds))
    ids = _lease_due(session, batch, limit or settings.send_batch_size, now)
    if not ids:
        return batch
    rows = _claimed_rows(session, ids)
    batch.versions = cache.get_many(session, {r.template_version_id for r in rows})
    screened = _screen(session, batch, rows, settings, now)
    _release_held(session, batch, screened)
    batch.messages = _to_send(session, screened.sendable)
    return batch


def expire_leases(session: Session, *, now: datetime | None = None) -> int:
    """Rows still `sending` after their lease: the sender died or hung mid-batch. A sender
    records each outcome as it goes and takes a message only while fewer than
    ``IN_FLIGHT`` lack one, so of each lease's rows left (in batch order, by id) the first
    ``IN_FLIGHT`` may have gone out: they become `unknown` and are never resent by
    themselves. The others were never handed to the relay: back to the queue. How many
    became unknown."""
    now = now or clock.now()
    place = (
        func.row_number().over(partition_by=Message.lease_owner, order_by=Message.id).label("place")
    )
    leased = (
        select(Message.id, place)
        .where(Message.status == MessageStatus.SENDING, Message.lease_expires_at < now)
        .subquery()
    )
    rows = session.execute(select(leased.c.id, leased.c.place)).all()
    maybe_sent = [id_ for id_, n in rows if n <= IN_FLIGHT]
    never_tried = [id_ for id_, n in rows if n > IN_FLIGHT]
    expired = move(
        session,
        maybe_sent,
        MessageStatus.UNKNOWN,
        from_=[MessageStatus.SENDING],
        where=[Message.lease_expires_at < now],
        reason="lease_expired",
        error="the sender stopped before recording the outcome: it may or may not have been sent",
        lease_owner=None,
    )
    move(
        session,
        never_tried,
        MessageStatus.QUEUED,
        from_=[MessageStatus.SENDING],
        where=[Message.lease_expires_at < now],
        lease_owner=None,
        lease_expires_at=None,
    )
    session.execute(delete(SendWindow).where(SendWindow.window_start < now - timedelta(hours=1)))
    return expired
