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
"""

from __future__ import annotations

import random
import secrets
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    String,
    Table,
    and_,
    bindparam,
    cast,
    delete,
    func,
    literal,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.orm import Session
from sqlalchemy.sql import Select

from automation import clock
from automation.addresses import email_hash
from automation.config import Settings
from automation.contacts.models import Contact, ContactStatus
from automation.db import dialect_insert, is_postgres, one_of
from automation.email.context import CONTACT_COLUMNS, contact_context, field_types, load_tags
from automation.email.identities import Sender, sender_of
from automation.email.mime import AddressError, ascii_address
from automation.email.models import (
    Message,
    MessageStatus,
    SenderIdentity,
    SendWindow,
    Suppression,
    SuppressionReason,
    Template,
    TemplateKind,
    TemplateVersion,
)
from automation.email.render import CompiledVersion, VersionCache
from automation.errors import Conflict, FieldError, InvalidInput, NotFound
from automation.policy import default_sender_paused_at, effective_settings

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
FINAL = frozenset({S.SENT, S.FAILED, S.SUPPRESSED})
MAX_ATTEMPTS = 8
BACKOFF_BASE = timedelta(minutes=1)
BACKOFF_MAX = timedelta(hours=4)
WINDOW = timedelta(minutes=1)
THROTTLE_FOR = timedelta(minutes=5)
# Contact states that stop mail. Transactional mail (receipts, the opt-in confirmation
# itself) still reaches unsubscribed and unconfirmed contacts; nothing reaches an address
# that bounced or complained.
BLOCKS_MARKETING = frozenset(
    {
        ContactStatus.UNSUBSCRIBED,
        ContactStatus.BOUNCED,
        ContactStatus.COMPLAINED,
        ContactStatus.PENDING,
    }
)
BLOCKS_ALL = frozenset({ContactStatus.BOUNCED, ContactStatus.COMPLAINED})
LIST_ALLOWS_TRANSACTIONAL = frozenset({SuppressionReason.UNSUBSCRIBED})


class IllegalTransition(Conflict):
    pass


def check_transition(old: MessageStatus, new: MessageStatus) -> None:
    """The one rule for status changes; every UPDATE of `status` goes through it."""
    if new not in ALLOWED[old]:
        raise IllegalTransition(f"a message cannot go from {old.value} to {new.value}")


def _move(
    session: Session,
    ids: Sequence[int],
    to: MessageStatus,
    *,
    from_: Iterable[MessageStatus],
    where: Sequence[Any] = (),
    **values: Any,
) -> int:
    froms = tuple(from_)
    for old in froms:
        check_transition(old, to)
    if not ids:
        return 0
    result = session.execute(
        update(Message)
        .where(one_of(session, Message.id, ids), Message.status.in_(froms), *where)
        .values(status=to, **values)
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]  # CursorResult


def _move_each(
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


# --- queueing ----------------------------------------------------------------------


@dataclass(frozen=True)
class QueueItem:
    dedupe_key: str
    contact_id: int
    template_version_id: int
    campaign_id: int | None = None
    campaign_variant_id: int | None = None
    enrollment_id: int | None = None
    workflow_node_id: str | None = None
    workflow_name: str | None = None
    campaign_name: str | None = None
    send_at: datetime | None = None
    workflow_id: int | None = None
    priority: int = 5


def _versions(session: Session, ids: set[int]) -> dict[int, tuple[TemplateKind, int | None]]:
    rows = session.execute(
        select(TemplateVersion.id, TemplateVersion.kind, TemplateVersion.sender_identity_id).where(
            TemplateVersion.id.in_(ids)
        )
    )
    return {vid: (kind, sender) for vid, kind, sender in rows}


def queue_messages(session: Session, items: Sequence[QueueItem]) -> list[int]:
    """Insert messages idempotently: a dedupe key already present inserts nothing. Returns
    the ids of the rows inserted. Workflows and campaigns call this in their transaction."""
    if not items:
        return []
    versions = _versions(session, {i.template_version_id for i in items})
    errors = [
        FieldError(
            f"items[{n}].template_version_id", f"no template version {i.template_version_id}"
        )
        for n, i in enumerate(items)
        if i.template_version_id not in versions
    ]
    errors += [
        FieldError(f"items[{n}].dedupe_key", "1 to 200 characters")
        for n, i in enumerate(items)
        if not 0 < len(i.dedupe_key) <= 200
    ]
    if errors:
        raise InvalidInput(errors)
    now = clock.now()
    rows = []
    for item in items:
        kind, sender = versions[item.template_version_id]
        rows.append(
            {
                "dedupe_key": item.dedupe_key,
                "contact_id": item.contact_id,
                "template_version_id": item.template_version_id,
                "sender_identity_id": sender,
                "marketing": kind is TemplateKind.MARKETING,
                "status": MessageStatus.QUEUED,
                "attempts": 0,
                "next_attempt_at": item.send_at or now,
                "token_nonce": secrets.randbits(32),
                "campaign_id": item.campaign_id,
                "campaign_variant_id": item.campaign_variant_id,
                "enrollment_id": item.enrollment_id,
                "workflow_id": item.workflow_id,
                "workflow_node_id": item.workflow_node_id,
                "priority": item.priority,
                "workflow_name": item.workflow_name,
                "campaign_name": item.campaign_name,
                "created_at": now,
                "opens": 0,
                "clicks": 0,
            }
        )
    inserted: list[int] = []
    for start in range(0, len(rows), 500):
        stmt = (
            dialect_insert(session, Message)
            .values(rows[start : start + 500])
            .on_conflict_do_nothing(index_elements=["dedupe_key"])
            .returning(Message.id)
        )
        inserted.extend(session.scalars(stmt))
    return inserted


def queue_message(
    session: Session,
    *,
    dedupe_key: str,
    contact_id: int,
    template_version_id: int,
    campaign_id: int | None = None,
    campaign_variant_id: int | None = None,
    enrollment_id: int | None = None,
    workflow_node_id: str | None = None,
    workflow_name: str | None = None,
    campaign_name: str | None = None,
    send_at: datetime | None = None,
    workflow_id: int | None = None,
    priority: int = 5,
) -> int | None:
    """Queue one message; None when its dedupe key was already queued (never twice)."""
    ids = queue_messages(
        session,
        [
            QueueItem(
                dedupe_key,
                contact_id,
                template_version_id,
                campaign_id,
                campaign_variant_id,
                enrollment_id,
                workflow_node_id,
                workflow_name,
                campaign_name,
                send_at,
                workflow_id,
                priority,
            )
        ],
    )
    return ids[0] if ids else None


def queue_for_contacts(
    session: Session,
    contact_ids: Select[Any],
    *,
    template_version_id: int,
    dedupe_prefix: str,
    campaign_id: int | None = None,
    campaign_variant_id: int | None = None,
    campaign_name: str | None = None,
    send_at: datetime | None = None,
) -> int:
    """INSERT … SELECT one message per contact id the query yields (a broadcast), with
    dedupe key ``<prefix><contact id>``. Returns the number inserted."""
    versions = _versions(session, {template_version_id})
    if template_version_id not in versions:
        raise InvalidInput(
            FieldError("template_version_id", f"no template version {template_version_id}")
        )
    kind, sender = versions[template_version_id]
    now = clock.now()
    ids = contact_ids.subquery()
    contact_id = ids.c[0]
    nonce: ColumnElement[Any] = (
        cast(func.floor(func.random() * 4294967296), BigInteger)
        if is_postgres(session)
        else func.abs(func.random()) % 4294967296
    )
    columns = {
        "dedupe_key": literal(dedupe_prefix) + cast(contact_id, String),
        "contact_id": contact_id,
        "template_version_id": literal(template_version_id),
        "sender_identity_id": literal(sender, type_=BigInteger),
        "marketing": literal(kind is TemplateKind.MARKETING),
        "status": literal(MessageStatus.QUEUED.value),
        "attempts": literal(0),
        "next_attempt_at": literal(send_at or now, type_=Message.next_attempt_at.type),
        "token_nonce": nonce,
        "campaign_id": literal(campaign_id, type_=BigInteger),
        "campaign_variant_id": literal(campaign_variant_id, type_=BigInteger),
        "campaign_name": literal(campaign_name, type_=String),
        "created_at": literal(now, type_=Message.created_at.type),
        "opens": literal(0),
        "clicks": literal(0),
    }
    stmt = (
        dialect_insert(session, Message.__table__)
        # WHERE true: SQLite cannot parse INSERT … SELECT … ON CONFLICT without a WHERE.
        .from_select(list(columns), select(*[c.label(n) for n, c in columns.items()]).where(true()))
        .on_conflict_do_nothing(index_elements=["dedupe_key"])
    )
    if is_postgres(session):
        # SQLAlchemy reports no rowcount for INSERT … SELECT here; count in the database.
        inserted = stmt.returning(literal(1)).cte("inserted")
        return int(session.scalar(select(func.count()).select_from(inserted)) or 0)
    return int(session.connection().execute(stmt).rowcount)


# --- claiming ----------------------------------------------------------------------


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


@dataclass
class Batch:
    owner: str
    lease_expires_at: datetime
    messages: list[Claimed] = field(default_factory=list)
    versions: dict[int, CompiledVersion] = field(default_factory=dict)
    senders: dict[int | None, Sender] = field(default_factory=dict)
    held: Counter[str] = field(default_factory=Counter)  # suppressed/capped/failed at claim


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
    limit = limit or settings.send_batch_size
    owner = uuid.uuid4().hex
    batch = Batch(owner, now + timedelta(seconds=settings.send_lease_seconds))
    identities = list(
        session.scalars(select(SenderIdentity).where(SenderIdentity.paused_at.is_(None)))
    )
    # None: the default sender's messages (no identity), unless the complaint guard paused it.
    default = [] if default_sender_paused_at(session) is not None else [None]
    order: list[SenderIdentity | None] = [*default, *identities]
    random.shuffle(order)  # no identity starves the others
    ids: list[int] = []
    for identity in order:
        want = limit - len(ids)
        if want <= 0:
            break
        if identity is None:
            ids += _claim_ids(session, None, want, owner, batch.lease_expires_at, now)
            continue
        granted = _reserve(session, identity, want, now)
        got = (
            _claim_ids(session, identity.id, granted, owner, batch.lease_expires_at, now)
            if granted
            else []
        )
        _give_back(session, identity.id, now, want - len(got))
        ids += got
    if not ids:
        return batch
    rows = session.execute(
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
            Message.workflow_node_id,
            Message.workflow_name,
            Message.campaign_name,
            Contact.status,
            Contact.inactive_since,
            *CONTACT_COLUMNS,  # what rendering needs, in the same query
        )
        .join(Contact, Contact.id == Message.contact_id)
        .where(one_of(session, Message.id, ids))
        .order_by(Message.id)
    ).all()
    batch.versions = cache.get_many(session, {r.template_version_id for r in rows})
    deleted = set(
        session.scalars(
            select(TemplateVersion.id)
            .join(Template, Template.id == TemplateVersion.template_id)
            .where(TemplateVersion.id.in_(batch.versions), Template.deleted_at.is_not(None))
        )
    )
    listed: dict[str, SuppressionReason] = {
        digest: reason
        for digest, reason in session.execute(
            select(Suppression.email_hash, Suppression.reason).where(
                one_of(session, Suppression.email_hash, {email_hash(r.email) for r in rows})
            )
        )
    }
    holds = {row.id: _hold_reason(row, listed, deleted, batch.versions) for row in rows}
    policy = effective_settings(session, settings)  # the admin's saved cap, if any
    capped = _frequency_capped(session, [r for r in rows if holds[r.id] is None], policy, now)
    held: dict[tuple[MessageStatus, str], list[int]] = defaultdict(list)
    deferred: list[dict[str, Any]] = []
    sendable = []
    for row in rows:
        hold = holds[row.id]
        if hold is not None:
            held[hold].append(row.id)
        elif row.id in capped:
            if policy.frequency_cap_action == "skip":
                held[(MessageStatus.SUPPRESSED, "frequency_cap")].append(row.id)
            else:
                deferred.append({"b_id": row.id, "b_next_attempt_at": capped[row.id]})
        else:
            sendable.append(row)
    for (status, reason), message_ids in held.items():
        _move(
            session,
            message_ids,
            status,
            from_=[MessageStatus.SENDING],
            reason=reason,
            lease_owner=None,
            lease_expires_at=None,
        )
        batch.held[reason] += len(message_ids)
    _move_each(
        session,
        deferred,
        MessageStatus.DEFERRED,
        from_=[MessageStatus.SENDING],
        owner=owner,
        columns=["next_attempt_at"],
        fixed={"reason": "frequency_cap", "lease_owner": None, "lease_expires_at": None},
    )
    if deferred:
        batch.held["frequency_cap"] += len(deferred)
    types = field_types(session)
    tags = load_tags(session, {r.contact_id for r in sendable})
    contexts = {
        r.contact_id: contact_context(dict(r._mapping), tags[r.contact_id], types) for r in sendable
    }
    batch.senders = {None: sender_of(None, settings.default_sender)}
    batch.senders.update({i.id: sender_of(i, settings.default_sender) for i in identities})
    batch.messages = [
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
        )
        for r in sendable
    ]
    return batch


def _hold_reason(
    row: Any,
    listed: dict[str, SuppressionReason],
    deleted: set[int],
    versions: dict[int, CompiledVersion],
) -> tuple[MessageStatus, str] | None:
    if row.template_version_id in deleted or row.template_version_id not in versions:
        return MessageStatus.FAILED, "template_deleted"
    try:
        ascii_address(row.email)
    except AddressError:
        return MessageStatus.FAILED, "invalid_address"
    blocking = BLOCKS_MARKETING if row.marketing else BLOCKS_ALL
    if row.status in blocking:
        return MessageStatus.SUPPRESSED, ContactStatus(row.status).value
    if row.marketing and row.inactive_since is not None:
        return MessageStatus.SUPPRESSED, "inactive"  # the sunset policy
    reason = listed.get(email_hash(row.email))
    if reason is not None and (row.marketing or reason not in LIST_ALLOWS_TRANSACTIONAL):
        return MessageStatus.SUPPRESSED, f"suppression_list:{SuppressionReason(reason).value}"
    return None


def _frequency_capped(
    session: Session, rows: Sequence[Any], settings: Settings, now: datetime
) -> dict[int, datetime]:
    """Message id → when it may go, for marketing messages over the cap: at most N
    marketing emails per contact per window, across every workflow and campaign.

    When more are due for a contact than the cap leaves room for, the free slots go by
    priority (10 first), then by age. Messages due but not in this batch (still queued, or
    in another sender's batch) compete too, ranked the same way: every sender process then
    makes the same choice, and a low-priority email claimed first cannot take the slot of
    a high-priority one claimed a moment later by another worker."""
    cap = settings.frequency_cap
    marketing = [r for r in rows if r.marketing]
    if cap <= 0 or not marketing:
        return {}
    window = timedelta(days=settings.frequency_cap_days)
    contacts = {r.contact_id for r in marketing}
    sent: dict[int, list[datetime]] = defaultdict(list)
    for contact_id, sent_at in session.execute(
        select(Message.contact_id, Message.sent_at).where(
            one_of(session, Message.contact_id, contacts),
            Message.marketing.is_(True),
            Message.status == MessageStatus.SENT,
            Message.sent_at > now - window,
        )
    ):
        if sent_at is not None:
            sent[contact_id].append(sent_at)
    ours = {r.id for r in marketing}
    due: dict[int, list[tuple[int, int]]] = defaultdict(list)  # contact → (-priority, id)
    for r in marketing:
        due[r.contact_id].append((-r.priority, r.id))
    for message_id, contact_id, priority in session.execute(
        select(Message.id, Message.contact_id, Message.priority).where(
            one_of(session, Message.contact_id, contacts),
            Message.marketing.is_(True),
            Message.status.in_(
                [MessageStatus.QUEUED, MessageStatus.DEFERRED, MessageStatus.SENDING]
            ),
            Message.next_attempt_at <= now,
        )
    ):
        if message_id not in ours:
            due[contact_id].append((-priority, message_id))
    out: dict[int, datetime] = {}
    for contact_id, competing in due.items():
        times = sent[contact_id]
        for _, message_id in sorted(competing):
            if len(times) < cap:
                times.append(now)  # this one takes a slot (sent now, or by its worker)
            elif message_id in ours:
                ordered = sorted(times)
                out[message_id] = ordered[len(ordered) - cap] + window + timedelta(seconds=1)
    return out


# --- outcomes ------------------------------------------------------------------------


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
    session: Session, owner: str, outcomes: Sequence[Outcome], *, now: datetime | None = None
) -> None:
    """Write a batch's results: one statement per kind of outcome. Only the lease holder's
    rows change (a row an operator already resent is not touched)."""
    now = now or clock.now()
    mine = [MessageStatus.SENDING, MessageStatus.UNKNOWN]
    by_status: dict[MessageStatus, list[Outcome]] = defaultdict(list)
    for outcome in outcomes:
        by_status[outcome.status].append(outcome)
    clear = {"lease_owner": None, "lease_expires_at": None}

    _move_each(
        session,
        [
            {
                "b_id": o.message_id,
                "b_smtp_response": o.smtp_response,
                "b_provider_message_id": o.provider_id,
            }
            for o in by_status[MessageStatus.SENT]
        ],
        MessageStatus.SENT,
        from_=mine,
        owner=owner,
        columns=["smtp_response", "provider_message_id"],
        fixed={
            **clear,
            "sent_at": now,
            "attempts": Message.__table__.c.attempts + 1,
            "reason": None,
            "error": None,
        },
    )
    retry, give_up = [], []
    for o in by_status[MessageStatus.DEFERRED]:
        if o.attempts + 1 >= MAX_ATTEMPTS:
            give_up.append(o)
        else:
            retry.append(o)
    _move_each(
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
        from_=mine,
        owner=owner,
        columns=["next_attempt_at", "reason", "error", "smtp_response"],
        fixed={**clear, "attempts": Message.__table__.c.attempts + 1},
    )
    failed = by_status[MessageStatus.FAILED] + [
        Outcome(
            o.message_id,
            MessageStatus.FAILED,
            o.contact_id,
            o.email,
            o.attempts,
            o.sender_identity_id,
            "retries_exhausted",
            o.error,
            o.smtp_response,
        )
        for o in give_up
    ]
    _move_each(
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
        from_=mine,
        owner=owner,
        columns=["reason", "error", "smtp_response", "bounced_at"],
        fixed={**clear, "attempts": Message.__table__.c.attempts + 1},
    )
    _move_each(
        session,
        [{"b_id": o.message_id, "b_error": o.error} for o in by_status[MessageStatus.UNKNOWN]],
        MessageStatus.UNKNOWN,
        from_=[MessageStatus.SENDING],
        owner=owner,
        columns=["error"],
        fixed={**clear, "reason": "outcome_unknown"},
    )
    _move_each(
        session,
        [{"b_id": o.message_id} for o in by_status[MessageStatus.QUEUED]],
        MessageStatus.QUEUED,
        from_=[MessageStatus.SENDING],
        owner=owner,
        columns=[],
        fixed=clear,
    )
    _count_sent(session, [o.contact_id for o in by_status[MessageStatus.SENT]])
    _suppress_bounces(session, [o for o in failed if o.hard_bounce], now)
    _slow_down(session, {o.sender_identity_id for o in outcomes if o.slow_down}, now)


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


def _suppress_bounces(session: Session, bounced: list[Outcome], now: datetime) -> None:
    """A hard bounce: the address goes on the suppression list, the contact becomes
    bounced (with its consent record), and an `email.bounced` event is recorded."""
    if not bounced:
        return
    from automation.contacts.consent import change_status
    from automation.contacts.models import Event
    from automation.reactions import IngestedEvent, react_to_events

    session.execute(
        dialect_insert(session, Suppression)
        .values(
            [
                {
                    "email_hash": email_hash(o.email),
                    "email": o.email,
                    "reason": SuppressionReason.BOUNCED,
                    "source": "smtp",
                    "created_at": now,
                }
                for o in {o.email: o for o in bounced}.values()
            ]
        )
        .on_conflict_do_nothing(index_elements=["email_hash"])
    )
    events = []
    for outcome in bounced:
        contact = session.get(Contact, outcome.contact_id)
        if contact is None:
            continue
        if (
            contact.status is not ContactStatus.BOUNCED
            and contact.status is not ContactStatus.COMPLAINED
        ):
            change_status(session, contact, ContactStatus.BOUNCED, source="smtp_bounce")
        event = Event(
            contact_id=contact.id,
            name="email.bounced",
            properties={"message_id": outcome.message_id, "response": outcome.smtp_response},
            occurred_at=now,
            received_at=now,
            source="email",
            idempotency_key=f"email.bounced:{outcome.message_id}",
        )
        session.add(event)
        session.flush()
        events.append(IngestedEvent(event.id, contact.id, event.name, event.properties, now))
    react_to_events(session, events)


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


# --- housekeeping and the operator -------------------------------------------------


def expire_leases(session: Session, *, now: datetime | None = None) -> int:
    """Rows still `sending` after their lease: the sender died or hung mid-batch. Whether
    they went out is unknown, so they become `unknown` and are never resent by themselves."""
    now = now or clock.now()
    check_transition(MessageStatus.SENDING, MessageStatus.UNKNOWN)
    result = session.execute(
        update(Message)
        .where(Message.status == MessageStatus.SENDING, Message.lease_expires_at < now)
        .values(
            status=MessageStatus.UNKNOWN,
            reason="lease_expired",
            error="the sender stopped before recording the outcome: it may or may not have "
            "been sent",
            lease_owner=None,
        )
        .execution_options(synchronize_session=False)
    )
    session.execute(delete(SendWindow).where(SendWindow.window_start < now - timedelta(hours=1)))
    return int(result.rowcount)  # type: ignore[attr-defined]  # CursorResult


def withdraw_waiting(session: Session, scope: ColumnElement[bool]) -> tuple[int, int]:
    """Take back the waiting (queued or deferred) messages matching ``scope``, e.g. those
    of a cancelled campaign. A row never handed to a relay (no attempt yet; a frequency
    cap deferral is not an attempt) is deleted: nothing was sent, nothing to keep. A row
    that already had an SMTP conversation (a temporary failure, or an operator's resend
    of an `unknown` one) is kept as the record of it and ends `failed` with reason
    ``withdrawn``, never retried. Rows a sender holds are untouched; they finish as they
    are (call again after they come back). Returns (deleted, withdrawn)."""
    waiting = (MessageStatus.QUEUED, MessageStatus.DEFERRED)
    for old in waiting:
        check_transition(old, MessageStatus.FAILED)
    deleted = session.execute(
        delete(Message)
        .where(scope, Message.status.in_(waiting), Message.attempts == 0)
        .execution_options(synchronize_session=False)
    )
    stopped = session.execute(
        update(Message)
        .where(scope, Message.status.in_(waiting), Message.attempts > 0)
        .values(status=MessageStatus.FAILED, reason="withdrawn")
        .execution_options(synchronize_session=False)
    )
    return int(deleted.rowcount), int(stopped.rowcount)  # type: ignore[attr-defined]


def resend_message(session: Session, message_id: int) -> Message:
    """An operator decided an `unknown` message should go (again): back to the queue."""
    message = get_message(session, message_id)
    check_transition(message.status, MessageStatus.QUEUED)
    moved = _move(
        session,
        [message.id],
        MessageStatus.QUEUED,
        from_=[message.status],
        reason="manual_resend",
        error=None,
        next_attempt_at=clock.now(),
        lease_owner=None,
        lease_expires_at=None,
    )
    if not moved:
        raise Conflict("the message changed meanwhile; reload it")
    session.refresh(message)
    return message


def get_message(session: Session, message_id: int) -> Message:
    message = session.get(Message, message_id)
    if message is None:
        raise NotFound(f"message {message_id} not found")
    return message


def search_messages(
    session: Session,
    *,
    status: MessageStatus | None = None,
    contact_id: int | None = None,
    template_id: int | None = None,
    campaign_id: int | None = None,
    enrollment_id: int | None = None,
    page: int = 1,
    per_page: int = 50,
) -> tuple[list[Message], int]:
    query = select(Message)
    if status is not None:
        query = query.where(Message.status == status)
    if contact_id is not None:
        query = query.where(Message.contact_id == contact_id)
    if campaign_id is not None:
        query = query.where(Message.campaign_id == campaign_id)
    if enrollment_id is not None:
        query = query.where(Message.enrollment_id == enrollment_id)
    if template_id is not None:
        query = query.where(
            Message.template_version_id.in_(
                select(TemplateVersion.id).where(TemplateVersion.template_id == template_id)
            )
        )
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    items = session.scalars(
        query.order_by(Message.id.desc()).limit(per_page).offset((page - 1) * per_page)
    )
    return list(items), total
