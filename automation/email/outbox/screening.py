"""What must not go, decided at claim time in the claim's transaction: the contact's
status, the sunset policy, the suppression list, a deleted template, an address the relay
cannot take, and the marketing frequency cap."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from automation.addresses import email_hash
from automation.config import Settings
from automation.contacts.models import ContactStatus
from automation.contacts.suppressions import SuppressionReason
from automation.db import one_of
from automation.email.mime import AddressError, wire_address
from automation.email.models import Message, MessageStatus, Template, TemplateVersion

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
Hold = tuple[MessageStatus, str]  # where a held message ends, and why


def deleted_versions(session: Session, version_ids: Collection[int]) -> set[int]:
    """The versions among ``version_ids`` whose template was deleted since queueing."""
    return set(
        session.scalars(
            select(TemplateVersion.id)
            .join(Template, Template.id == TemplateVersion.template_id)
            .where(TemplateVersion.id.in_(version_ids), Template.deleted_at.is_not(None))
        )
    )


def hold_reason(
    row: Any,
    listed: dict[str, SuppressionReason],
    unusable_versions: Collection[int],
) -> Hold | None:
    """Why a claimed row must not go (None: it may). ``listed`` is the suppression list's
    reasons by address hash; ``unusable_versions`` those deleted or not loaded."""
    if row.template_version_id in unusable_versions:
        return MessageStatus.FAILED, "template_deleted"
    try:
        wire_address(row.email, utf8=True)  # SMTPUTF8 is the transport's question
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


def frequency_capped(
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
