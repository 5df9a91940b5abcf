"""Subscription status: the one transition function, with a consent record for every move."""

from __future__ import annotations

from sqlalchemy.orm import Session

from automation import clock
from automation.contacts.models import ConsentRecord, Contact, ContactStatus
from automation.errors import FieldError, InvalidInput

S = ContactStatus
# A complainer or bounced address is never silently put back to "subscribed": it must
# opt in again (pending → confirmed) or an operator must do it by hand.
ALLOWED: dict[ContactStatus, set[ContactStatus]] = {
    S.SUBSCRIBED: {S.UNSUBSCRIBED, S.BOUNCED, S.COMPLAINED, S.PENDING},
    S.PENDING: {S.SUBSCRIBED, S.UNSUBSCRIBED, S.BOUNCED, S.COMPLAINED},
    S.UNSUBSCRIBED: {S.SUBSCRIBED, S.PENDING, S.BOUNCED, S.COMPLAINED},
    S.BOUNCED: {S.SUBSCRIBED, S.UNSUBSCRIBED, S.PENDING, S.COMPLAINED},
    S.COMPLAINED: {S.UNSUBSCRIBED, S.PENDING},
}


def record_consent(
    session: Session,
    contact: Contact,
    status_from: ContactStatus | None,
    *,
    source: str,
    ip: str | None = None,
    consent_text: str | None = None,
) -> None:
    session.add(
        ConsentRecord(
            contact_id=contact.id,
            status_from=status_from.value if status_from else None,
            status_to=contact.status.value,
            occurred_at=clock.now(),
            source=source,
            ip=ip,
            consent_text=consent_text,
        )
    )


def change_status(
    session: Session,
    contact: Contact,
    new_status: ContactStatus,
    *,
    source: str,
    ip: str | None = None,
    consent_text: str | None = None,
) -> bool:
    """Move a contact to ``new_status``; False when it already was, InvalidInput if refused."""
    old = contact.status
    if old == new_status:
        return False
    if new_status not in ALLOWED[old]:
        raise InvalidInput(
            FieldError("status", f"cannot change from {old.value} to {new_status.value}")
        )
    contact.status = new_status
    if new_status is S.SUBSCRIBED and old is S.PENDING:
        contact.confirmed_at = clock.now()
    contact.updated_at = clock.now()
    session.flush()
    record_consent(session, contact, old, source=source, ip=ip, consent_text=consent_text)
    return True


def confirm_subscription(
    session: Session, contact: Contact, *, source: str, ip: str | None = None
) -> bool:
    """Double opt-in confirmation: a pending contact becomes subscribed."""
    if contact.status is not S.PENDING:
        return False
    return change_status(session, contact, S.SUBSCRIBED, source=source, ip=ip)
