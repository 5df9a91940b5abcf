"""A hard bounce, wherever it is heard (the relay's 5xx while sending, a DSN, a provider's
webhook): the address goes on the suppression list, the contact becomes bounced (a
complaint stays: it is the stronger signal), and one `email.bounced` event is recorded per
message. The outbox and the feedback intake both call :func:`record_hard_bounce`, so the
event carries the same properties either way: ``type``, ``diagnostic`` (the relay's reply
or the report's Diagnostic-Code) and ``message_id`` when the bounced message is known."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from automation.contacts.consent import change_status
from automation.contacts.models import Contact, ContactStatus, Event
from automation.contacts.suppressions import SuppressionReason, suppress
from automation.db import dialect_insert
from automation.reactions import IngestedEvent

BOUNCED = "email.bounced"


def record_hard_bounce(
    session: Session,
    contact: Contact,
    address: str,
    *,
    message_id: int | None,
    diagnostic: str | None,
    source: str,
    occurred_at: datetime,
    now: datetime,
) -> IngestedEvent | None:
    """Record one hard bounce of ``address`` (``contact``'s); the new event for the caller to
    react to (None when this message's bounce was recorded already)."""
    event = record_feedback_event(
        session,
        contact.id,
        BOUNCED,
        "hard_bounce",
        diagnostic=diagnostic,
        message_id=message_id,
        source=source,
        occurred_at=occurred_at,
        now=now,
    )
    suppress(session, [address], SuppressionReason.BOUNCED, source=source, now=now)
    if contact.status is not ContactStatus.BOUNCED and contact.status is not (
        ContactStatus.COMPLAINED
    ):
        change_status(session, contact, ContactStatus.BOUNCED, source=source)
    return event


def record_feedback_event(
    session: Session,
    contact_id: int,
    name: str,
    kind: str,
    *,
    diagnostic: str | None,
    message_id: int | None,
    source: str,
    occurred_at: datetime,
    now: datetime,
) -> IngestedEvent | None:
    """Store a bounce or complaint event (``type``, ``diagnostic``, ``message_id``), once per
    message and event name; None when that message's was stored already."""
    properties: dict[str, Any] = {"type": kind, "diagnostic": diagnostic}
    if message_id is not None:
        properties["message_id"] = message_id
    row = session.execute(
        dialect_insert(session, Event)
        .values(
            contact_id=contact_id,
            name=name,
            properties=properties,
            occurred_at=occurred_at,
            received_at=now,
            source=source,
            idempotency_key=f"{name}:{message_id}" if message_id is not None else None,
        )
        .on_conflict_do_nothing(index_elements=["idempotency_key"])
        .returning(Event.id)
    ).first()
    if row is None:
        return None
    return IngestedEvent(row[0], contact_id, name, properties, occurred_at)
